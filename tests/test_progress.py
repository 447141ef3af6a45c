"""Progress as events (issue 15): graph conversion, frozen features and test predictions
report (stage, done, total, rate), throttled by the engine; the headless output prints a
few milestone lines (or a bar on a terminal), the dashboard a percentage and the same
lines; a run's set-up does not build graphs in proportion to the rows."""

from __future__ import annotations

import gc
import re
import threading
import tracemalloc
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.common.events import Progress, RunFinished, RunStarted, read_events
from tui_ft.core.library.runs import RunSummary
from tui_ft.tui.state import RunState

STAGES = ("graphs", "features", "predict")
PROGRESS_LINE = re.compile(r"^(graphs|features|predict) (\d+)/(\d+)( \(\d+/s\))?$")


@pytest.fixture(scope="module")
def cold_cache(tmp_path_factory) -> Path:
    """A cache folder of this module's own: the first run converts graphs and computes features."""
    return tmp_path_factory.mktemp("progress-cache")


def _check_stage(evs: list[Progress]) -> None:
    """In order, one total, ends at it exactly once."""
    assert evs, "no progress events"
    done = [e.done for e in evs]
    assert done == sorted(done) and len(set(done)) == len(done), done
    assert len({e.total for e in evs}) == 1
    assert evs[-1].done == evs[-1].total and sum(e.final for e in evs) == 1
    assert [e.time for e in evs] == sorted(e.time for e in evs)


# ---------------------------------------------------------------- the reporter


def test_reporter_throttles_keeps_order_and_ends_once():
    from tui_ft.core.common.progress import ProgressReporter

    got: list[Progress] = []
    ticks = iter(range(10**6))
    rep = ProgressReporter(got.append, "r", "graphs", interval=3600, clock=lambda: next(ticks) / 100)
    for d in range(0, 1001):
        rep(d, 1000)
    rep(1000, 1000)  # a repeated last call is not a second final event
    assert [(e.done, e.total) for e in got] == [(0, 1000), (1000, 1000)]
    assert got[0].rate is None and got[-1].rate == pytest.approx(100.0)  # 1000 items in 10 s

    # from several threads (feature extraction on worker threads): still in order, one final
    got.clear()
    rep = ProgressReporter(got.append, "r", "features", interval=0)
    lock, count = threading.Lock(), [0]

    def work():
        for _ in range(250):
            with lock:  # as FeatureCache.get: count and report under one lock
                count[0] += 1
                rep(count[0], 1000)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_stage(got)
    # a call that goes backwards is dropped, so events never go back
    rep2_got: list[Progress] = []
    rep2 = ProgressReporter(rep2_got.append, "r", "predict", interval=0)
    for d in (0, 5, 3, 7, 10):
        rep2(d, 10)
    assert [e.done for e in rep2_got] == [0, 5, 7, 10]


def test_no_rate_until_the_stage_has_run_a_while():
    """Issue 22: the first event of a stage often comes with items already done (a batch of
    graphs, a batch of predictions): no rate over its few microseconds (``50/240
    (50000000000/s)``), and those items are not counted in the rate later."""
    from tui_ft.core.common.progress import MIN_RATE_S, ProgressReporter

    got: list[Progress] = []
    now = [100.0]
    rep = ProgressReporter(got.append, "r", "graphs", interval=0, clock=lambda: now[0])
    rep(50, 240)
    now[0] += 1e-6
    rep(100, 240)
    now[0] = 100.0 + MIN_RATE_S / 2
    rep(150, 240)
    now[0] = 102.0
    rep(240, 240)
    assert [e.rate for e in got[:3]] == [None, None, None]
    assert [e.describe() for e in got[:3]] == ["graphs 50/240", "graphs 100/240", "graphs 150/240"]
    assert got[-1].rate == pytest.approx((240 - 50) / 2.0)
    assert got[-1].describe() == "graphs 240/240 (95/s)"
    # a stage that ends at once has no rate at all
    quick: list[Progress] = []
    rep = ProgressReporter(quick.append, "r", "predict", interval=0, clock=lambda: 5.0)
    rep(32, 240)
    rep(240, 240)
    assert [e.describe() for e in quick] == ["predict 32/240", "predict 240/240"]


def test_plain_output_and_dashboard_log_show_the_same_few_milestones(capsys):
    evs = [Progress("r1", stage=s, done=d, total=997, rate=50.0) for s in ("graphs", "predict") for d in range(998)]
    printer = cli.Printer(plain=True)
    capsys.readouterr()
    for ev in evs:
        printer.show(ev)
    out, err = capsys.readouterr()
    assert out == ""  # progress goes to stderr
    lines = err.splitlines()
    for stage in ("graphs", "predict"):
        mine = [ln for ln in lines if ln.startswith(stage + " ")]
        assert 2 <= len(mine) <= 12, mine
        assert mine[0] == f"{stage} 0/997 (50/s)" and mine[-1] == f"{stage} 997/997 (50/s)"
    state = RunState(RunSummary(run_id="r1", status="running"))
    assert [ln.text for ln in state.apply(evs)] == lines
    # the runs table's status cell: the percentage while a stage runs, gone when it ends
    state = RunState(RunSummary(run_id="r1", status="running"))
    state.apply([Progress("r1", stage="graphs", done=450, total=1000)])
    assert state.progress_label == "graphs 45%"
    state.apply([Progress("r1", stage="graphs", done=1000, total=1000)])
    assert state.progress_label is None


def test_terminal_printer_draws_a_bar_and_keeps_the_last_line(capsys, monkeypatch):
    monkeypatch.setattr(cli.sys.stdout, "isatty", lambda: True, raising=False)
    printer = cli.Printer(plain=False)
    assert printer.console is not None
    for d in range(0, 101, 10):
        printer.show(Progress("r1", stage="features", done=d, total=100, rate=20.0))
        if d < 100:
            assert printer._bar is not None
    assert printer._bar is None  # the stage ended: the bar is gone, the spinner back
    printer.close()
    out, err = capsys.readouterr()
    # on a terminal rich shows stderr above its live display (redirected into its console);
    # the bar itself is transient, the stage's last line stays, once
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out + err)
    assert text.count("features 100/100 (20/s)\n") == 1, text


# ---------------------------------------------------------------- a real run and eval


@pytest.mark.slow
def test_demo_run_and_eval_report_progress(project, demo_preset, cold_cache, monkeypatch, capsys):
    monkeypatch.setenv("TUI_FT_CACHE", str(cold_cache / "run"))  # cold graphs and features, whatever ran before
    preset = demo_preset("progress", epochs=1)
    assert cli.main(["run", str(preset), "--plain"]) == 0
    err = capsys.readouterr().err.splitlines()
    (run_dir,) = (project / "logs").iterdir()
    evs = read_events(run_dir / "events.jsonl")
    kinds = [e.type for e in evs]
    prog = {s: [e for e in evs if isinstance(e, Progress) and e.stage == s] for s in STAGES}
    for stage, stage_evs in prog.items():
        _check_stage(stage_evs)
        # throttled: at most about two a second, plus the first and the last
        seconds = stage_evs[-1].time - stage_evs[0].time
        assert len(stage_evs) <= 3 + 2.5 * seconds, (stage, len(stage_evs), seconds)
    started = next(e for e in evs if isinstance(e, RunStarted))
    fin = evs[-1]
    assert isinstance(fin, RunFinished)
    assert prog["graphs"][-1].total == started.n_train + started.n_val + started.n_test
    assert prog["features"][-1].total == prog["graphs"][-1].total  # a cold feature cache: every row
    assert prog["predict"][-1].total == fin.n_test
    # stages in run order: graphs before run_started, features after, test predictions last
    pos = {s: [i for i, e in enumerate(evs) if e in prog[s]] for s in STAGES}
    assert max(pos["graphs"]) < kinds.index("run_started") < min(pos["features"])
    assert max(pos["features"]) < kinds.index("epoch_end")
    assert kinds.index("epoch_end") < min(pos["predict"]) and max(pos["predict"]) < len(evs) - 1

    # the plain headless output: a few lines per stage, the dashboard's log lines exactly
    shown = [ln for ln in err if PROGRESS_LINE.match(ln)]
    for stage in STAGES:
        mine = [ln for ln in shown if ln.startswith(stage + " ")]
        assert 1 <= len(mine) <= 12 and mine[-1].split()[1] == f"{prog[stage][-1].total}/{prog[stage][-1].total}"
    state = RunState(RunSummary(run_id=run_dir.name))
    assert [ln.text for ln in state.apply(evs) if PROGRESS_LINE.match(ln.text)] == shown

    # eval: graphs (from the cache now) and predictions, on stderr; the result on stdout
    assert cli.main(["eval", f"{run_dir.name}@best", "--data", "demo", "--rows", "all"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("mae ") and "on 240 structures" in out
    lines = [ln for ln in err.splitlines() if PROGRESS_LINE.match(ln)]
    assert [" ".join(ln.split()[:2]) for ln in lines if ln.split()[1] == "240/240"] == ["graphs 240/240", "predict 240/240"]
    assert len(lines) <= 24


# ---------------------------------------------------------------- bounded memory


def _setup(paths, fraction: float):
    """A head-mode run's set-up on the demo data, traced: graphs, features, compositions, AtomRef refit.
    Returns (transient peak above what stays, what stays, the trainer)."""
    from tui_ft.core.train.engine import RunContext, Trainer
    from tui_ft.core.config.presets import load_preset

    root = Path(__file__).resolve().parents[1]
    preset = load_preset(str(root / "presets" / "demo.toml")).with_changes({"data.fraction": fraction, "train.epochs": 1})
    t = Trainer(RunContext(preset, f"mem-{fraction}", paths, lambda ev: None))
    t._setup_process()
    t._load_data()
    t._load_model()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        t._build_graphs()
        t.forward = t._make_forward()
        t._setup_trainable()
        t._refit_atomref()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - current, current - base, t


@pytest.mark.slow
def test_setup_memory_does_not_grow_with_rows(tmp_path, cold_cache, monkeypatch):
    """The set-up's transient memory (what it allocates and frees again: graphs built to read
    atom counts and compositions, to extract features, to refit AtomRef) is the same for 102
    rows and 240: graphs are built per block or not at all (fields read from the packed store).
    Before, each split's graphs were built at once: about one graph's Python footprint per row."""
    from tui_ft.core.common.paths import Paths

    monkeypatch.setenv("TUI_FT_CACHE", str(cold_cache))
    paths = Paths(tmp_path)
    _setup(paths, 1.0)  # warm caches and one-time costs (imports, lazy initialisation)
    small, _, ts = _setup(paths, 0.2)
    big, _, tb = _setup(paths, 1.0)
    extra = len(tb.rows) - len(ts.rows)
    assert extra > 100
    # one CrystalGraph's traced footprint (its Python objects; tensor data is not traced)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    held = [tb.graphs[int(r)] for r in tb.rows]
    per_graph = (tracemalloc.get_traced_memory()[0] - base) / len(held)
    tracemalloc.stop()
    del held
    assert per_graph > 200
    assert (big - small) / extra < 0.25 * per_graph, (small, big, extra, per_graph)
