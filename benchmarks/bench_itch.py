"""ITCH feed figures for one full simulated session (23,400 s, ~1.6 M events by default).

    uv run python benchmarks/bench_itch.py [--seconds 23400] [--brokers 127.0.0.1:9092] [--no-kafka]
        [--client auto|bridge|python] [--stream-args "--batch 65536 ..."]

Prints:
  1. encode rate: records -> framed ITCH messages (compiled encoder with the resting orders, batches of
     65,536), msgs/s;
  2. listener decode rate: MoldUDP64 packets -> validated, decoded, applied to the order book
     (in-process, no sockets), msgs/s -- one packet per call, and in slabs of 256 as the listener
     receives them with recvmmsg;
  3. end to end on the running local Kafka (`qrsdp stack up` first): the session published to a fresh
     topic, then `qrsdp itch-stream` (subprocess) -> UDP multicast on loopback -> listener; msgs/s from
     the streamer's start to the listener's end of session, with the listener's gap counters (the
     figure only counts when unrecovered == 0), the streamer's seconds per step (wall and main-thread
     CPU) and the CPU seconds of its process and of its Kafka bridge. The topic is deleted afterwards.

The streamer is measured as an installed one starts: its Python bytecode written (this package is an
editable install, which ``uv sync --compile-bytecode`` does not compile, and ``PYTHONDONTWRITEBYTECODE``
would make every start compile ~45 modules again) and its compiled functions in numba's cache (after a
source change the first start compiles them: seconds, once). Both are prepared before the clock starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from qrsdp_sim import stack
from qrsdp_sim.engine import SessionConfig, simulate_session
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.transport import MMSGHDR
from qrsdp_sim.sinks.memory import InMemorySink

DATE = dt.date(2026, 1, 2)


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def encode_all(feed: DayFeed, records: np.ndarray, batch: int = 65_536) -> Framed:
    orders = OrderTable()
    parts = [feed.opening(int(records["ts_ns"][0]))]
    seq = parts[0].count + 1
    for lo in range(0, len(records), batch):
        f = feed.orders(records[lo : lo + batch], 1, seq, orders).framed
        seq += f.count
        parts.append(f)
    parts.append(feed.closing(int(records["ts_ns"].max())))
    return Framed.concat(parts)


def prepare_streamer_start() -> None:
    """Bytecode of this package written and the streamer's compiled functions in numba's cache, as they
    are for an installed streamer after its first start (see the module docstring)."""
    import compileall

    import qrsdp_sim
    from qrsdp_sim.itch.streamer import warm_up

    compileall.compile_dir(Path(qrsdp_sim.__file__).parent, quiet=1)
    warm_up(DayFeed(Directory.of(["AAPL"]), 100))


def free_udp_port() -> int:
    return stack.free_port(kind=socket.SOCK_DGRAM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=23_400)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--no-kafka", action="store_true", help="only the in-process figures (1 and 2)")
    ap.add_argument("--stream-args", default="",
                    help="more `qrsdp itch-stream` options for the end-to-end run, e.g. '--batch 262144'")
    ap.add_argument("--client", choices=["auto", "bridge", "python"], default=None,
                    help="the streamer's Kafka client (QRSDP_KAFKA_CLIENT; default: the environment's, else auto)")
    args = ap.parse_args()

    sink = InMemorySink()
    simulate_session(SessionConfig(seed=1, p0_ticks=10_000, session_seconds=args.seconds), sink)
    records = sink.records
    feed = DayFeed(Directory.of(["AAPL"]), 100)
    encode_all(feed, records[:10_000])  # compile / load the numba cache
    t = best_of(3, lambda: encode_all(feed, records))
    framed = encode_all(feed, records)
    print(f"1. encode: {framed.count:,} messages in {t * 1e3:.0f} ms = {framed.count / t / 1e6:.1f} M msgs/s")

    packets = mold.packets(framed, mold.session_id(DATE), 1)

    def decode() -> Listener:
        lis = Listener(ListenerConfig(print_messages=False), out=io.StringIO())
        for p in packets:
            lis.handle_packet(p)
        lis.flush()
        return lis

    decode()
    t = best_of(3, decode)
    lis = decode()
    assert lis.stats.messages == framed.count and lis.stats.book_errors == 0
    print(f"2. listener decode (+ book): {len(packets):,} packets, {framed.count:,} messages in {t * 1e3:.0f} ms "
          f"= {framed.count / t / 1e6:.2f} M msgs/s (one handle_packet call per packet)")

    # the same through handle_batch, in slabs of 256 datagrams as recvmmsg fills them
    slot, per = 2048, 256
    slabs = []
    for lo in range(0, len(packets), per):
        group = packets[lo : lo + per]
        slab = np.zeros(per * slot, np.uint8)
        lengths = np.zeros(per, MMSGHDR)["len"]
        for k, pk in enumerate(group):
            slab[k * slot : k * slot + len(pk)] = np.frombuffer(pk, np.uint8)
            lengths[k] = len(pk)
        slabs.append((slab, lengths, len(group)))

    def decode_batches() -> Listener:
        lis = Listener(ListenerConfig(print_messages=False), out=io.StringIO())
        for slab, lengths, n in slabs:
            lis.handle_batch(slab, slot, lengths, n)
        lis.flush()
        return lis

    decode_batches()
    t = best_of(3, decode_batches)
    lis = decode_batches()
    assert lis.stats.messages == framed.count and lis.stats.book_errors == 0
    print(f"   in batches of {per} datagrams (handle_batch, as after recvmmsg): {framed.count / t / 1e6:.2f} M msgs/s")
    if args.no_kafka:
        return

    from confluent_kafka.admin import AdminClient, NewTopic

    from qrsdp_sim.kafka.sink import KafkaSink

    topic = f"bench.itch.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.brokers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        ks = KafkaSink(args.brokers, symbol="AAPL", date=DATE.isoformat(), run_id="bench-itch", topic=topic)
        for lo in range(0, len(records), 65_536):
            ks.append(records[lo : lo + 65_536])
        ks.close(close_ticks=0)
        assert ks.stats.failed == 0, ks.stats
        prepare_streamer_start()
        port, rport = free_udp_port(), free_udp_port()
        listener = Listener(ListenerConfig(port=port, retransmit=("127.0.0.1", rport), print_messages=False,
                                           gap_timeout=30, max_runtime=300), out=io.StringIO())
        listener.open()
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(listener.run()), daemon=True)
        thread.start()
        with tempfile.TemporaryDirectory() as tmp:
            summary_path = Path(tmp) / "stream.json"
            cmd = [sys.executable, "-c", "from qrsdp_sim.cli import main; main()", "itch-stream",
                   "--kafka-brokers", args.brokers, "--kafka-topic", topic, "--consumer-group", f"bench-{topic}",
                   "--symbols", "AAPL", "--port", str(port), "--retransmit-port", str(rport),
                   "--exit-after-sessions", "1", "--linger", "5", "--max-runtime", "300",
                   "--summary-json", str(summary_path), *args.stream_args.split()]  # fmt: skip
            env = dict(os.environ)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            if args.client:
                env["QRSDP_KAFKA_CLIENT"] = args.client
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env)
            try:
                thread.join(300)
                wall = time.perf_counter() - t0
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            stream = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        n = result.get("messages", 0)
        print(f"3. end to end Kafka -> itch-stream -> UDP multicast -> listener: {n:,} messages; "
              f"{wall:.2f} s from streamer start (process start-up included) = {n / wall / 1e6:.2f} M msgs/s; "
              f"{result.get('elapsed_s')} s first to last packet at the listener = "
              f"{(result.get('msgs_per_s') or 0) / 1e6:.2f} M msgs/s; complete={result.get('complete')} "
              f"gaps={result.get('gaps')} recovered={result.get('recovered')} "
              f"unrecovered={result.get('unrecovered')} packets={result.get('packets'):,}")
        if stream:
            c = stream["counters"]
            print(f"   streamer ({stream.get('kafka_client')} Kafka client): consumed {c['consumed']:,}, sent "
                  f"{c['messages']:,} messages in {c['packets']:,} packets, {c['batches']} batches, retransmitted "
                  f"{stream['retransmit']['messages']:,}")
            cpu = stream.get("cpu_s") or {}
            print(f"   streamer seconds per step: wall {stream.get('timings_s')}; main-thread CPU {cpu.get('steps')}")
            print(f"   CPU seconds: streamer process {cpu.get('process')} (start-up and every thread included), "
                  f"its Kafka bridge {cpu.get('children')}")
    finally:
        admin.delete_topics([topic])[topic].result(30)


if __name__ == "__main__":
    main()
