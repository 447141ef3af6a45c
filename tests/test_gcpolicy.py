"""tui_ft.tui.gcpolicy: the dashboard's full garbage-collection passes wait for a pause in the input."""

from __future__ import annotations

import gc

from tui_ft.tui.gcpolicy import NO_AUTO_FULL_PASS, IdleCollector


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _make_gen1_passes(n: int) -> None:
    for _ in range(n):
        gc.collect(1)


def test_full_passes_wait_for_idle_input_and_thresholds_come_back():
    before = gc.get_threshold()
    clock = Clock()
    c = IdleCollector(idle_s=1.0, force_s=30.0, clock=clock)
    c.start()
    try:
        assert gc.get_threshold() == (before[0], before[1], NO_AUTO_FULL_PASS)
        _make_gen1_passes(before[2] + 1)  # as many as Python waits for before a full pass
        c.input()
        clock.t += 0.5
        assert not c.tick() and c.passes == 0  # a key half a second ago: not now
        clock.t += 0.6
        assert c.tick() and c.passes == 1  # 1.1 s without input
        assert gc.get_count()[2] == 0
        assert not c.tick()  # nothing pending any more
        _make_gen1_passes(before[2] + 1)
        for _ in range(60):  # keys all the time: the pass still comes after force_s
            clock.t += 0.5
            c.input()
            c.tick()
        assert c.passes == 2
    finally:
        c.stop()
    assert gc.get_threshold() == before


def test_freeze_is_undone_at_stop():
    c = IdleCollector()
    c.start()
    c.freeze()
    assert gc.get_freeze_count() > 0
    c.stop()
    assert gc.get_freeze_count() == 0
