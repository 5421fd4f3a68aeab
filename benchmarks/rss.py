"""This process's resident memory for the benchmarks: the peak so far, ``VmRSS``/``VmHWM``, a peak
reset, and :class:`PhaseRSS` (a sampling thread that keeps each named phase's peak). Linux reads.

    >>> rec = PhaseRSS(); rec.mark("load"); phases = rec.close()   # doctest: +SKIP
"""
from __future__ import annotations

import resource
import threading
import time
from typing import Optional

GIB = 2 ** 30


def rss_peak_gib() -> float:
    """This process's peak RSS so far in GiB (``ru_maxrss``; on Linux it follows :func:`reset_peak`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def vm_kib(key: str) -> Optional[int]:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux ``/proc/self/status``), else None."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PhaseRSS:
    """A thread sampling this process's RSS; ``mark(name)`` closes the current phase (its peak kept)."""

    def __init__(self, every_s: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self.phases: list[tuple[str, float, float, float]] = []   # (name, RSS at its start, peak GiB, seconds)
        self._name, self._peak, self._t0, self._start = "start", 0.0, time.perf_counter(), 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        rss = self._proc.memory_info().rss / GIB
        with self._lock:
            self._peak = max(self._peak, rss)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self._sample()

    def mark(self, name: str) -> None:
        """End the phase running so far (recorded under its name); ``name`` starts."""
        self._sample()
        with self._lock:
            now = time.perf_counter()
            self.phases.append((self._name, self._start, self._peak, now - self._t0))
            self._name, self._t0 = name, now
            self._peak = self._start = self._proc.memory_info().rss / GIB

    def close(self) -> list[tuple[str, float, float, float]]:
        self.mark("end")
        self._stop.set()
        return self.phases
