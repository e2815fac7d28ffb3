"""MoldUDP64 framing (header, sequence numbers, counts, size limit, heartbeat, end of session),
the re-request buffer and server, and the pcap capture."""

from __future__ import annotations

import datetime as dt
import socket
import struct

import numpy as np
import pytest

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed, encode_orders, stock_table
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.retransmit import Limits, RetransmitBuffer, RetransmitServer
from qrsdp_sim.itch.transport import PcapWriter, Sender, open_receiver, read_pcap
from qrsdp_sim.records import RECORD_DTYPE

SID = b"QR20260102"


def adds(n: int, first_id: int = 1) -> Framed:
    """``n`` Add Order messages (38 framed bytes each)."""
    rec = np.zeros(n, RECORD_DTYPE)
    rec["ts_ns"] = 34_200_000_000_000 + np.arange(n) * 1_000
    rec["price_ticks"] = 10_000
    rec["qty"] = 1
    rec["order_id"] = np.arange(first_id, first_id + n)
    return encode_orders(rec, 1, stocks=stock_table(["AAPL"]), tick_size=100, first_seq=1, orders=OrderTable()).framed


def parse(packet: bytes) -> tuple[bytes, int, int, list[bytes]]:
    session, seq, count = struct.unpack_from(">10sQH", packet, 0)
    msgs, pos = [], 20
    if count not in (0, 0xFFFF):
        for _ in range(count):
            (length,) = struct.unpack_from(">H", packet, pos)
            msgs.append(packet[pos + 2 : pos + 2 + length])
            pos += 2 + length
        assert pos == len(packet)
    return session, seq, count, msgs


def test_header_heartbeat_end_of_session_and_request_bytes() -> None:
    assert mold.header(SID, 5, 3) == b"QR20260102" + bytes.fromhex("0000000000000005") + bytes.fromhex("0003")
    assert mold.heartbeat(SID, 77) == b"QR20260102" + (77).to_bytes(8, "big") + b"\x00\x00"
    assert mold.end_of_session(SID, 78) == b"QR20260102" + (78).to_bytes(8, "big") + b"\xff\xff"
    assert mold.request(SID, 9, 300) == b"QR20260102" + (9).to_bytes(8, "big") + (300).to_bytes(2, "big")
    assert mold.session_id(dt.date(2026, 1, 2)) == SID == mold.session_id("2026-01-02")
    assert mold.parse_header(mold.header(SID, 5, 3)) == (SID, 5, 3)
    with pytest.raises(ValueError):
        mold.parse_header(b"short")
    with pytest.raises(ValueError):
        mold.header(b"SHORT", 1, 1)


def test_sequence_progression_counts_and_size_limit() -> None:
    framed = adds(100)
    packets = mold.packets(framed, SID, first_seq=1)
    # 1,400-byte packets: 20-byte header + 36 x 38 = 1,388 bytes; 37 messages would need 1,426
    assert [parse(p)[2] for p in packets] == [36, 36, 28]
    assert [parse(p)[1] for p in packets] == [1, 37, 73]
    assert all(len(p) <= 1400 for p in packets)
    assert len(packets[0]) == 20 + 36 * 38
    msgs = [m for p in packets for m in parse(p)[3]]
    assert msgs == [framed.message(i) for i in range(100)]
    # exactly at the limit: two 38-byte blocks fill a 96-byte packet, a third does not fit
    tight = mold.packets(framed[:5], SID, first_seq=10, max_packet=20 + 2 * 38)
    assert [(parse(p)[1], parse(p)[2]) for p in tight] == [(10, 2), (12, 2), (14, 1)]
    assert all(len(p) == 96 for p in tight[:2])
    with pytest.raises(ValueError):
        mold.packet_bounds(framed, max_packet=40)


def test_realtime_span_closes_packets() -> None:
    framed = adds(10)  # 1 us apart
    bounds = mold.packet_bounds(framed, max_span_ns=2_500)  # at most 2.5 us of event time per packet
    assert list(bounds) == [0, 3, 6, 9, 10]


def test_split_blocks_rejects_inconsistent_packets() -> None:
    packet = mold.packets(adds(3), SID, 1)[0]
    assert len(mold.split_blocks(packet[20:], 3)) == 3
    for body, count in [(packet[20:-1], 3), (packet[20:], 2), (packet[20:], 4), (packet[20:] + b"x", 3)]:
        with pytest.raises(ValueError):
            mold.split_blocks(body, count)


def test_retransmit_buffer_lookups_and_eviction() -> None:
    buf = RetransmitBuffer(capacity=250)
    a, b, c = adds(100, 1), adds(100, 101), adds(100, 201)
    buf.add(SID, 1, a)
    buf.add(SID, 101, b)
    assert buf.range(SID) == (1, 201)
    got = buf.packets(SID, 95, 10)  # spans the two blocks
    msgs = [m for head, body in got for m in parse(head + bytes(body))[3]]
    assert msgs == [a.message(i) for i in range(94, 100)] + [b.message(i) for i in range(4)]
    assert parse(got[0][0] + bytes(got[0][1]))[1] == 95
    assert buf.packets(SID, 201, 5) == [] and buf.packets(b"OTHERSESSN", 1, 5) == []
    buf.add(SID, 201, c)  # 300 > 250: the oldest block goes
    assert buf.range(SID) == (101, 301)
    assert buf.packets(SID, 50, 5) == []
    # a re-send after a restart overlapping what is held keeps the original
    buf.add(SID, 251, adds(100, 251))
    assert buf.range(SID) == (101, 351)  # only the 50 new messages were added (250 held)
    assert buf.held == 250


def test_retransmit_server_answers_requests_over_udp() -> None:
    buf = RetransmitBuffer()
    framed = adds(500)
    buf.add(SID, 1, framed)
    server = RetransmitServer(buf, "127.0.0.1", 0).start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    try:
        client.sendto(mold.request(SID, 40, 100), server.address)
        got = []
        while len(got) < 100:
            session, seq, _count, msgs = parse(client.recv(2048))
            assert session == SID and seq == 40 + len(got)
            got.extend(msgs)
        assert got == [framed.message(i) for i in range(39, 139)]
        client.sendto(b"garbage", server.address)
        client.sendto(mold.request(SID, 10_000, 5), server.address)  # not held: no answer
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(2048)
        c = server.counters
        assert c.malformed == 1 and c.out_of_range == 1 and c.messages_sent == 100 and c.answered == 1
    finally:
        client.close()
        server.close()


def _victim() -> tuple[socket.socket, int]:
    """A socket that receives whatever the server sends to any 127.x.y.z address at its port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.setblocking(False)
    return s, s.getsockname()[1]


def _drain(sock: socket.socket) -> tuple[int, int]:
    """(datagrams, bytes) waiting on ``sock``."""
    n = size = 0
    while True:
        try:
            size += len(sock.recv(65536))
            n += 1
        except BlockingIOError:
            return n, size


def test_rerequest_server_is_not_an_amplifier() -> None:
    """Forged requests (the source address of UDP is whatever the sender writes) buy at most the
    per-requester and total byte budgets, answers are never larger than what was asked, and requests for
    what the server does not hold are refused and counted."""
    buf = RetransmitBuffer(capacity=30_000)
    for k in range(10):
        buf.add(SID, 1 + 3_000 * k, adds(3_000, 1 + 3_000 * k))
    limits = Limits(per_requester_requests_s=50, per_requester_bytes_s=200_000, total_bytes_s=1_000_000,
                    max_requesters=64)
    server = RetransmitServer(buf, "127.0.0.1", 0, limits=limits)  # not started: handle() is called here
    victim, port = _victim()
    now = 1_000.0
    try:
        # answers never exceed the request: 3 messages asked, 3 sent, in one packet
        assert server.handle(mold.request(SID, 10, 3), ("127.0.0.1", port), now) == 3
        n, size = _drain(victim)
        assert (n, size) == (1, 20 + 3 * 38)
        # what it does not hold: refused, counted, nothing sent
        assert server.handle(mold.request(b"QR19990101", 1, 5), ("127.0.0.1", port), now) == 0
        assert server.handle(mold.request(SID, 30_001, 5), ("127.0.0.1", port), now) == 0
        buf.add(SID, 30_001, adds(3_000, 30_001))  # evicts the oldest block: 1..3000 are gone
        assert server.handle(mold.request(SID, 5, 5), ("127.0.0.1", port), now) == 0
        assert server.handle(b"\0" * 19, ("127.0.0.1", port), now) == 0
        assert server.handle(mold.request(SID, 5_000, 0), ("127.0.0.1", port), now) == 0
        c = server.counters
        assert (c.unknown_session, c.out_of_range, c.malformed) == (1, 2, 2) and _drain(victim) == (0, 0)
        # one forged requester asking for the most it can: the byte budget caps what reaches the victim
        b0 = c.bytes_sent
        sent = sum(server.handle(mold.request(SID, 5_000, 4096), ("127.0.0.1", port), now) for _ in range(40))
        n, size = _drain(victim)
        assert size <= c.bytes_sent - b0 <= limits.per_requester_bytes_s
        assert sent > 0 and c.rate_limited > 0 and c.cut_by_limit > 0
        # and its request budget: 50 per second whatever it sends
        before = c.rate_limited
        for _ in range(200):
            server.handle(mold.request(SID, 5_000, 1), ("127.0.0.1", port), now + 10)
        assert c.rate_limited - before == 200 - 50
        _drain(victim)
        # a thousand forged addresses aimed at the victim's port: the server-wide budget caps the total
        b0 = c.bytes_sent
        for i in range(1_000):
            server.handle(mold.request(SID, 5_000, 4096), (f"127.0.{i // 250}.{i % 250 + 1}", port), now + 20)
        n, size = _drain(victim)
        assert 0 < c.bytes_sent - b0 <= limits.total_bytes_s
        assert len(server._requesters) <= limits.max_requesters  # bounded state whatever the source addresses
        # budgets refill with time: a second later the same requester is answered again
        assert server.handle(mold.request(SID, 5_000, 10), ("127.0.0.1", port), now + 21.5) == 10
    finally:
        victim.close()
        server.sock.close()


def test_sender_unicast_loss_and_pcap(tmp_path) -> None:
    rx = open_receiver(unicast=("127.0.0.1", 0))
    rx.settimeout(2)
    pcap = tmp_path / "feed.pcap"
    tx = Sender(unicast=rx.getsockname(), pcap=pcap, loss=0.5, loss_seed=3)
    packets = mold.packets(adds(400), SID, 1)
    try:
        for p in packets:
            tx.send(p[:20], p[20:])
        tx.send(mold.heartbeat(SID, 401), lossy=False)
        tx.close()
        received = []
        rx.settimeout(0.5)
        while True:
            try:
                received.append(rx.recv(2048))
            except TimeoutError:
                break
    finally:
        rx.close()
    assert tx.dropped > 0 and tx.packets + tx.dropped == len(packets) + 1
    assert len(received) == tx.packets and received[-1] == mold.heartbeat(SID, 401)
    captured = read_pcap(pcap)
    assert [c[1] for c in captured] == received
    assert all(c[3] == rx_addr for c in captured for rx_addr in [captured[0][3]])


def test_pcap_headers_are_standard(tmp_path) -> None:
    path = tmp_path / "x.pcap"
    w = PcapWriter(path)
    w.write(b"hello", ("127.0.0.1", 40000), ("239.1.1.1", 5001), ttl=1, ts=1_700_000_000.25)
    w.close()
    data = path.read_bytes()
    magic, vmaj, vmin, _tz, _sig, snap, link = struct.unpack_from("<IHHiIII", data, 0)
    assert (magic, vmaj, vmin, snap, link) == (0xA1B2C3D4, 2, 4, 65535, 1)
    sec, usec, incl, orig = struct.unpack_from("<IIII", data, 24)
    assert (sec, usec, incl, orig) == (1_700_000_000, 250_000, 14 + 20 + 8 + 5, 14 + 20 + 8 + 5)
    frame = data[40:]
    assert frame[:6] == bytes.fromhex("01005e010101")  # multicast MAC of 239.1.1.1
    ip = frame[14:34]
    assert ip[0] == 0x45 and ip[8] == 1 and ip[9] == 17 and ip[16:20] == bytes([239, 1, 1, 1])
    total = sum(struct.unpack("!10H", ip))  # the IPv4 header checksum verifies to 0xFFFF
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF
    assert struct.unpack("!HHH", frame[34:40]) == (40000, 5001, 13)
    assert read_pcap(path)[0][1:] == (b"hello", ("127.0.0.1", 40000), ("239.1.1.1", 5001))
