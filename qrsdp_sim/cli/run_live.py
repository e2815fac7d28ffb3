"""``qrsdp run --days 0``: the live exchange mode's signals, progress lines and closing report.

The engine side is :mod:`qrsdp_sim.engine.live`. Here: SIGTERM and SIGINT request a stop (the
sessions in progress end at their next batch boundary, the manifest and the publisher are closed,
exit 0); a second signal ends the process at once, as the signal would without this handler (the
manifest is current anyway: it lists every finished session and names those in progress).
"""

from __future__ import annotations

import os
import signal
import sys
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
        stop.request(name)
        # os.write: a handler may run while the main thread is inside a buffered write to stderr
        os.write(2, f"{name}: stopping at the next batch boundary (send it again to stop at once)\n".encode())

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
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from qrsdp_sim.engine.live import run_live

    console = Console(stderr=True, highlight=False)
    columns = (
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[date]}  {task.fields[events]:>12,} events"),
        TimeElapsedColumn(),
    )
    show_bar = sys.stderr.isatty() or bool(os.environ.get("QRSDP_PROGRESS"))
    with Progress(*columns, console=console, transient=False, disable=not show_bar) as bar:
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
            f"interrupted: {entry['symbol']} {entry['date']} after {entry['sim_seconds']:g} of "
            f"{entry['session_seconds']:,} simulated seconds ({entry['records_delivered']:,} records handed "
            f"to the sinks): no file, not in the manifest's sessions",
            markup=False,
            soft_wrap=True,
        )
