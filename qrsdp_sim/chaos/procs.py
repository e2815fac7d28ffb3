"""The service processes of the chaos soak: started, SIGKILLed, restarted, watched.

A :class:`ServiceProcess` is one long-running ``qrsdp`` command (the Parquet consumer, the ITCH
streamer, the producer's ``qrsdp run``). Its Kafka client is a child process, ``qrsdp-kafka-bridge``;
:meth:`ServiceProcess.bridge_pid` finds it so the soak can kill the bridge alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from qrsdp_sim.kafka.bridge import BINARY_NAME


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from /proc."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def is_bridge(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0.decode(errors="replace")) == BINARY_NAME


class ServiceProcess:
    """One ``qrsdp`` service process; its output goes to ``log`` (appended across restarts)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.unexpected_exits: list[int] = []  # return codes of exits the soak did not cause
        self.bridges_seen: set[int] = set()

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1} of {self.name} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def bridge_pid(self) -> int | None:
        if not self.alive():
            return None
        for child in children(self.pid):
            if is_bridge(child):
                self.bridges_seen.add(child)
                return child
        return None

    def wait_bridge(self, timeout: float) -> int | None:
        """The bridge child, once the service has started it (None if it has not within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            pid = self.bridge_pid()
            if pid is not None:
                return pid
            time.sleep(0.1)
        return None

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def restart_if_exited(self) -> bool:
        """Like a supervisor (systemd ``Restart=always``): start again after an exit the soak did not cause."""
        if self.proc is None or self.proc.poll() is None:
            return False
        self.unexpected_exits.append(self.proc.returncode)
        self.start()
        return True

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait (graceful); SIGKILL after ``timeout``. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def kill_leftover_bridges(self) -> int:
        """Kill bridges this service started that outlived it (an orphan after SIGKILL); how many."""
        n = 0
        for pid in self.bridges_seen:
            if is_bridge(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    n += 1
                except OSError:
                    pass
        return n
