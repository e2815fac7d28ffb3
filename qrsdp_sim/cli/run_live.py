"""``qrsdp run --days 0``: the live exchange mode's signals, progress lines and closing report.

The engine side is :mod:`qrsdp_sim.engine.live`. Here: SIGTERM and SIGINT request a stop (the
sessions in progress end at their next batch boundary, the manifest and the publisher are closed,
exit 0); a second signal ends the process at once, as the signal would without this handler (the
manifest is current anyway: it lists every finished session and names those in progress).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qrsdp_sim.engine.live import StopRequest

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """While inside: the first SIGTERM/SIGINT requests ``stop``; the next one kills the process."""
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if received:  # asked twice: stop now, as the default action does
            for s in STOP_SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        received.append(signum)
        stop.request(name)  # nothing else here: a handler may run inside the main thread's own writes

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def execute_live(spec, secs, output: Path, workers: int, realtime_speed: float | None, publisher,
                 stop: StopRequest, last_date) -> Any:
    """Run until ``stop``; a progress bar per security on a terminal and one line per finished session."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)

    def announce_stop() -> None:  # a thread of its own: the signal handler must not write
        stop.wait()
        if stop.reason in {s.name for s in STOP_SIGNALS}:
            console.print(f"{stop.reason}: stopping at the next batch boundary (send it again to stop at once)",
                          markup=False, soft_wrap=True)

    announcer = threading.Thread(target=announce_stop, name="qrsdp-live-stop", daemon=True)
    announcer.start()
    try:
        return _run_with_progress(spec, secs, output, workers, realtime_speed, publisher, stop, last_date, console)
    finally:
        if stop.is_set():
            announcer.join()  # its line comes before the closing report


def _run_with_progress(spec, secs, output: Path, workers: int, realtime_speed: float | None, publisher,
                       stop: StopRequest, last_date, console) -> Any:
    from qrsdp_sim.cli.progress import run_progress
    from qrsdp_sim.engine.live import run_live

    with run_progress(console) as bar:
        tasks = {s.symbol: bar.add_task(s.symbol, total=float(spec.session_seconds), date="", events=0)
                 for s in secs}

        def progress(symbol: str, date, t: float, n: int) -> None:
            bar.update(tasks[symbol], completed=t, date=date.isoformat(), events=n)

        def on_session(rec) -> None:
            r = rec.result
            console.print(f"{rec.symbol} {rec.date.isoformat()}: {r.events:,} events, open {r.open_ticks} "
                          f"close {r.close_ticks} -> {output / rec.file}", markup=False, soft_wrap=True)

        def on_start(symbol: str, date, open_ticks: int) -> None:
            console.print(f"{symbol} {date.isoformat()}: started, open {open_ticks}", markup=False, soft_wrap=True)

        console.print(f"live: simulating trading dates from {spec.start_date.isoformat()} until SIGTERM/SIGINT"
                      f"{f' at {realtime_speed:g}x real time' if realtime_speed else ''}; manifest: "
                      f"{output / 'manifest.json'}", markup=False, soft_wrap=True)
        return run_live(spec, secs, output, stop, workers=workers, progress=progress,
                        realtime_speed=realtime_speed, publisher=publisher, last_date=last_date,
                        on_session=on_session, on_start=on_start)


def report_live_end(result) -> None:
    """The closing lines of a live run (after the usual table): why it ended, what is incomplete."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    why = {"stopped": f"stopped by {result.stop_reason}", "calendar_end": "the last date was simulated"}
    line = f"live run {why.get(result.state, result.state)}: {len(result.sessions)} finished session(s)"
    last = result.manifest["live"].get("complete_through")
    if last:
        line += f", every security through {last}"
    console.print(line, markup=False, soft_wrap=True)
    for entry in result.interrupted:
        console.print(
            f"interrupted: {entry['symbol']} {entry['date']} at {entry['delivered_seconds']:g} of "
            f"{entry['session_seconds']:,} simulated seconds ({entry['records_delivered']:,} records handed "
            f"to the sinks): no file, not in the manifest's sessions",
            markup=False,
            soft_wrap=True,
        )
