"""Event-log throughput: BinaryFileSink writes and sequential reads into one array.

    uv run python benchmarks/bench_eventlog.py [--records 20000000] [--repeat 5]

Prints records per second. Reads are reported for the first read in the process
(output memory freshly faulted in) and as the median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import synthetic_records

from qrsdp_sim.eventlog import BinaryFileSink, LogHeader
from qrsdp_sim.eventlog.reader import EventLogReader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000_000, help="records in the test file")
    parser.add_argument("--batch", type=int, default=65_536, help="records per append() call")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions of each measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test file (default: a temp dir)")
    args = parser.parse_args()

    records = synthetic_records(args.records)
    n = len(records)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.qrsdp"
        write_times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with BinaryFileSink(path, LogHeader(), fsync=False) as sink:
                for i in range(0, n, args.batch):
                    sink.append(records[i : i + args.batch])
            write_times.append(time.perf_counter() - t0)
        size = path.stat().st_size
        read_times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = EventLogReader(path).read_all()
            read_times.append(time.perf_counter() - t0)
            del out
        one_thread = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = EventLogReader(path).read_all(threads=1)
            one_thread.append(time.perf_counter() - t0)
            del out

    mb = n * 26 / 1e6
    print(f"records: {n:,}  raw {mb:,.0f} MB  file {size / 1e6:,.0f} MB  compression {n * 26 / size:.2f}x")
    print(f"write  (batches of {args.batch:,}): median {n / statistics.median(write_times) / 1e6:6.1f} M records/s")
    print(f"read_all, first in process:       {n / read_times[0] / 1e6:6.1f} M records/s")
    print(f"read_all, median of {args.repeat}:           {n / statistics.median(read_times) / 1e6:6.1f} M records/s")
    print(f"read_all, 1 thread, median:       {n / statistics.median(one_thread) / 1e6:6.1f} M records/s")


if __name__ == "__main__":
    main()
