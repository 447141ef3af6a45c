"""When the dashboard lets Python's garbage collector make its full passes.

Measured with ``bench/bench_tui_latency.py`` (3,000 runs, a filter, two live runs; BENCHMARKS.md
section 13): the collector's full (generation 2) passes took 0.3-0.8 s each on this 2-core
machine and were the longest pauses in the keys' latency. Textual makes cyclic garbage on
every style update (a virtual ``DOMNode`` per component class and widget), and a full pass
walks every object the app holds. Two things here:

* :func:`freeze`: the runs a scan has just read live as long as the app; ``gc.freeze()``
  moves them out of every later pass (refcounting still frees what is dropped; only cycles
  among those objects wait until :meth:`IdleCollector.stop`'s ``gc.unfreeze()``).
* :class:`IdleCollector`: no automatic full pass while the app runs (generation 2's
  threshold raised); the app's timer calls :meth:`IdleCollector.tick`, which makes the pass
  when no key or mouse input came for ``idle_s`` and the collector would have made one by
  then (``gc.get_count()[2]`` at its old threshold), or after ``force_s`` in any case.
  :meth:`stop` puts the thresholds back (the process may go on: a test, a script).

No Textual here; the app reports input through :meth:`IdleCollector.input`.
"""

from __future__ import annotations

import gc
import time

NO_AUTO_FULL_PASS = 1_000_000_000  # generation 2's threshold while the app runs


class IdleCollector:
    def __init__(self, idle_s: float = 1.0, force_s: float = 30.0, clock=time.monotonic):
        self.idle_s, self.force_s, self.clock = idle_s, force_s, clock
        self._saved: tuple[int, int, int] | None = None
        self._frozen = False
        self.last_input = self.last_pass = clock()
        self.passes = 0  # full passes made here (tests, benchmarks)

    def start(self) -> None:
        if self._saved is None:
            self._saved = gc.get_threshold()
            t0, t1, _ = self._saved
            gc.set_threshold(t0, t1, NO_AUTO_FULL_PASS)

    def stop(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def freeze(self) -> None:
        gc.freeze()
        self._frozen = True

    def input(self) -> None:
        self.last_input = self.clock()

    def due(self) -> bool:
        if self._saved is None:
            return False
        now = self.clock()
        pending = gc.get_count()[2] >= self._saved[2]  # as many gen-1 passes as Python waits for
        if not pending:
            return False
        return now - self.last_input >= self.idle_s or now - self.last_pass >= self.force_s

    def tick(self) -> bool:
        """Make the full pass if it is due; returns whether it was made."""
        if not self.due():
            return False
        gc.collect(2)
        self.last_pass = self.clock()
        self.passes += 1
        return True
