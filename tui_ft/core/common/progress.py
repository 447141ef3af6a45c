"""Throttled progress events of a long step (graphs, features, predict)."""

from __future__ import annotations

import threading
import time
from typing import Callable

from tui_ft.core.common.events import (  # noqa: E402
    Event,
    Progress,
)

PROGRESS_INTERVAL_S = 0.5  # at most about two progress events a second per stage
MIN_RATE_S = 1.0  # a progress rate is shown once a stage has run this long


class ProgressReporter:
    """Throttled :class:`Progress` events of one stage, passed to ``sink``.

    ``reporter(done, total[, rate])`` emits an event for the first call, then at most
    one every ``interval`` seconds, and always the one with ``done == total`` (once);
    calls that go backwards are dropped, so the events are in order. ``rate`` defaults
    to the items done per second since the first call (the items of the first call were
    done at an unknown pace and are not counted), and stays ``None`` until
    ``MIN_RATE_S`` have passed: a rate over a few milliseconds is noise (``50/240
    (50000000000/s)``). ``clock`` is the time source (seconds). Safe to call from several threads.
    """

    def __init__(self, sink: Callable[[Event], None], run_id: str, stage: str, *,
                 interval: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.perf_counter):
        self.sink, self.run_id, self.stage, self.interval, self.clock = sink, run_id, stage, interval, clock
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._done0 = 0
        self._last_t: float | None = None
        self._last_done = -1
        self._finished = False

    def __call__(self, done: int, total: int, rate: float | None = None) -> None:
        with self._lock:
            now = self.clock()
            if self._t0 is None:
                self._t0, self._done0 = now, done
            final = done >= total
            if self._finished or total <= 0 or done < self._last_done or (done == self._last_done and not final):
                return
            if not final and self._last_t is not None and now - self._last_t < self.interval:
                return
            if rate is None and done > self._done0 and now - self._t0 >= MIN_RATE_S:
                rate = (done - self._done0) / (now - self._t0)
            self._last_t, self._last_done, self._finished = now, done, final
            self.sink(Progress(self.run_id, stage=self.stage, done=int(done), total=int(total),
                               rate=None if rate is None else float(rate)))
