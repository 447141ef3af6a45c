"""torch's CPU threads adjusted to the load on the cores (tui_ft.core.train.setup.CpuThreads)."""

from __future__ import annotations

import pytest
import torch

from tui_ft.core.train.setup import (
    CpuThreads,
    busy_cpu_seconds,
    configure_cpu,
    threads_are_free,
)


class Fake:
    """A clock, the CPUs' busy seconds and this process's CPU seconds, moved by hand."""

    def __init__(self):
        self.now = 100.0
        self.busy = 5000.0
        self.own = 40.0

    def run(self, seconds: float, *, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds


@pytest.fixture
def threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def governor(fake: Fake, cores: int = 2) -> CpuThreads:
    return CpuThreads(cores, interval=2.0, cpus=[0, 1], busy=lambda cpus: fake.busy, own=lambda: fake.own,
                      clock=lambda: fake.now)


def test_one_thread_while_another_process_takes_a_core_and_all_again_once_it_stops(threads):
    fake = Fake()
    g = governor(fake)
    torch.set_num_threads(2)
    fake.run(1.0, own_cores=2.0, other_cores=1.0)
    g.tick()  # before the interval: nothing read, nothing changed
    assert (g.threads, torch.get_num_threads(), g.changes) == (2, 2, 0)
    fake.run(1.5, own_cores=1.2, other_cores=0.8)
    g.tick()
    assert (g.threads, torch.get_num_threads()) == (1, 1)
    fake.run(3.0, own_cores=1.0, other_cores=1.0)  # the other process still there: stays at one
    g.tick()
    assert (g.threads, torch.get_num_threads(), g.changes) == (1, 1, 1)
    fake.run(3.0, own_cores=1.0, other_cores=0.1)  # a dashboard's trickle is not a reason to stay at one
    g.tick()
    assert (g.threads, torch.get_num_threads(), g.changes) == (2, 2, 2)
    fake.run(2.0, own_cores=1.0, other_cores=0.6)
    g.tick()
    assert g.threads == 1
    g.close()
    assert (g.threads, torch.get_num_threads()) == (2, 2)


def test_never_more_threads_than_it_started_with_and_never_fewer_than_one(threads):
    fake = Fake()
    g = governor(fake, cores=4)
    torch.set_num_threads(4)
    fake.run(2.0, own_cores=1.0, other_cores=8.0)
    g.tick()
    assert g.threads == 1
    fake.run(2.0, own_cores=1.0, other_cores=1.4)
    g.tick()
    assert g.threads == 3  # 4 - 1.4 others, rounded
    fake.run(2.0, own_cores=3.0, other_cores=0.0)
    g.tick()
    assert g.threads == 4 and torch.get_num_threads() == 4


def test_inert_with_one_core():
    g = CpuThreads(1, busy=lambda cpus: pytest.fail("read"), own=lambda: pytest.fail("read"))
    g.tick()
    g.close()
    assert not g.active and g.threads == 1


def test_busy_seconds_read_from_proc_stat_for_the_given_cpus_only(tmp_path):
    import os

    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  900 10 300 99999 50 7 8 20 0 0\n"
        "cpu0 400 5 100 50000 30 3 4 10 0 0\n"
        "cpu1 500 5 200 49999 20 4 4 10 0 0\n"
        "intr 12345\n"
    )
    hz = os.sysconf("SC_CLK_TCK")
    # cpu1: user 500 + nice 5 + system 200 + irq 4 + softirq 4 + steal 10 (idle and iowait left out)
    assert busy_cpu_seconds([1], str(stat)) == pytest.approx(723 / hz)
    assert busy_cpu_seconds([0, 1], str(stat)) == pytest.approx((400 + 5 + 100 + 3 + 4 + 10 + 723) / hz)
    assert busy_cpu_seconds([5], str(stat)) == 0.0


def test_a_thread_variable_pins_the_threads(monkeypatch, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("TUI_FT_THREADS", "2")
    assert not threads_are_free()
    g = configure_cpu("cpu")
    assert not g.active and torch.get_num_threads() == 2
    monkeypatch.delenv("TUI_FT_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert not threads_are_free()
    assert not configure_cpu("cpu").active
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert not configure_cpu("cpu", ddp=True).active  # a DDP rank's threads are set by its launcher
    torch.set_num_threads(2)
    g = configure_cpu("cpu")
    assert g.active == threads_are_free()  # Linux: it watches the cores
    torch.set_flush_denormal(False)
