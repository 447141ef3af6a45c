"""Chart maths of the dashboard (tui_ft.tui.charts): no app needed."""

from __future__ import annotations

import pytest

from tui_ft.core.common.events import EpochEnd
from tui_ft.tui.charts import (
    PALETTE,
    PredictionsError,
    RunSeries,
    assign_colors,
    bins_for_width,
    curve_bounds,
    downsample,
    error_histogram,
    error_stats,
    int_ticks,
    learning_curves,
    log10_series,
    max_points_for_width,
    nice_ticks,
    parity_data,
    read_predictions,
    series_from_history,
)


def ep(epoch, val, train=None):
    return EpochEnd("r", epoch=epoch, train_mae=train, val_mae=val, lr=1e-3, seconds=1.0, best_val_mae=val, best_epoch=epoch)


def test_series_from_history_starts_at_epoch_0_and_skips_missing_train():
    s = series_from_history("r", [ep(0, 0.5), ep(1, 0.4, 0.3), ep(2, 0.35, 0.25)])
    assert s.epochs == [0, 1, 2]
    assert s.val == [0.5, 0.4, 0.35]
    assert s.train_epochs == [1, 2]
    assert s.train == [0.3, 0.25]


def test_series_from_history_resumed_epoch_replaces_and_nan_dropped():
    s = series_from_history("r", [ep(0, 0.5), ep(1, 0.4, 0.3), ep(1, 0.39, 0.29), ep(2, float("nan"), 0.2)])
    assert s.epochs == [0, 1]
    assert s.val == [0.5, 0.39]
    assert s.train == [0.29, 0.2]


def test_downsample_keeps_ends_and_minimum():
    xs = list(range(1000))
    ys = [abs(x - 537) + 1.0 for x in xs]
    dx, dy = downsample(xs, ys, 50)
    assert len(dx) <= 51
    assert dx[0] == 0 and dx[-1] == 999
    assert 537 in dx
    assert dx == sorted(dx)
    assert all(ys[x] == y for x, y in zip(dx, dy))


def test_downsample_short_series_unchanged():
    assert downsample([0, 1, 2], [3.0, 2.0, 1.0], 10) == ([0, 1, 2], [3.0, 2.0, 1.0])


def test_log10_series_drops_non_positive():
    xs, ys = log10_series([0, 1, 2, 3, 4], [1.0, 0.0, -1.0, float("inf"), 0.01])
    assert xs == [0, 4]
    assert ys == pytest.approx([0.0, -2.0])


def test_learning_curves_log_and_overlays():
    a = RunSeries("a", [0, 1, 2], [1.0, 0.1, 0.01], [1, 2], [0.5, 0.05])
    b = RunSeries("b", [0, 1], [0.8, 0.7])
    curves = learning_curves(a, [b, a], log=True)
    assert [c.label for c in curves] == ["val", "train", "val b"]  # the primary is not overlaid twice
    assert curves[0].ys == pytest.approx([0.0, -1.0, -2.0])
    assert curves[0].color != curves[2].color
    assert curves[1].color != curves[0].color  # train is a dimmer shade
    assert curve_bounds(curves) == (0.0, 2.0)
    assert learning_curves(None, []) == []


def test_learning_curves_repeated_log_builds_do_not_raise():
    # the reason we do not use plotext's log scale: rebuilding must never fail
    a = RunSeries("a", [0, 1], [0.0, -1.0])
    assert learning_curves(a, log=True) == []


def test_colors_stable_and_distinct():
    ids = [f"run-{i}" for i in range(len(PALETTE))]
    c1 = assign_colors(ids)
    assert len(set(c1.values())) == len(PALETTE)
    assert assign_colors(["run-3"])["run-3"] == assign_colors(["run-3", "run-9"])["run-3"]
    assert assign_colors(ids) == c1


def test_int_ticks():
    assert int_ticks(0, 3) == [0, 1, 2, 3]
    assert int_ticks(0, 0) == [0]
    t = int_ticks(0, 137, 8)
    assert t[0] == 0 and len(t) <= 8 and t[-1] <= 137
    assert all(b - a == t[1] - t[0] for a, b in zip(t, t[1:]))


def test_nice_ticks_round_labels():
    ticks, labels = nice_ticks(-1.8845630769230768, 1.570469230769231, 6)
    # range 3.45 over at most 6 ticks: raw step 0.69, rounded up to 1 (1, 2, 2.5, 5 x 10^k)
    assert ticks == [-1.0, 0.0, 1.0] and labels == ["-1", "0", "1"]
    ticks, labels = nice_ticks(0.2, 0.6, 6)
    assert labels == ["0.2", "0.3", "0.4", "0.5", "0.6"]
    assert nice_ticks(float("nan"), 1.0) == ([], [])


def test_max_points_for_width():
    assert max_points_for_width(0) == 10
    assert max_points_for_width(110) == 200


def test_read_predictions(tmp_path):
    p = tmp_path / "pred.csv"
    p.write_text("id,true,pred\na,0.1,0.2\nb,-1.0,-0.5\nc,nan,1\nd,x,1\n", encoding="utf-8")
    pr = read_predictions(p)
    assert pr.ids == ["a", "b"]
    assert pr.true == [0.1, -1.0]
    assert pr.pred == [0.2, -0.5]
    assert pr.skipped == 2


def test_read_predictions_errors(tmp_path):
    with pytest.raises(PredictionsError, match="cannot read"):
        read_predictions(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,y\na,1\n", encoding="utf-8")
    with pytest.raises(PredictionsError, match="no true / pred column"):
        read_predictions(bad)


def test_parity_data_range_and_stride():
    true = [float(i) for i in range(100)]
    pred = [t + 1 for t in true]
    xs, ys, (lo, hi) = parity_data(true, pred, max_points=10)
    assert len(xs) == len(ys) <= 10
    assert lo < 0 and hi > 100
    assert parity_data([], []) == ([], [], (0.0, 1.0))
    _, _, (lo, hi) = parity_data([1.0], [1.0])
    assert hi > lo


def test_error_histogram_symmetric_and_complete():
    true = [0.0] * 10
    pred = [-0.2, -0.1, 0.0, 0.0, 0.05, 0.1, 0.1, 0.1, 0.2, 0.3]
    centres, counts, width = error_histogram(true, pred, bins=6)
    assert sum(counts) == 10
    assert len(centres) == 6
    assert centres[0] == pytest.approx(-centres[-1])
    assert width == pytest.approx(0.1)
    assert error_histogram([], []) == ([], [], 0.0)


def test_error_stats():
    st = error_stats([0.0, 0.0], [1.0, -1.0])
    assert st.n == 2 and st.mae == 1.0 and st.rmse == 1.0 and st.mean == 0.0 and st.max_abs == 1.0
    assert error_stats([], []) is None


def test_bins_for_width():
    assert 5 <= bins_for_width(40, 10) <= 60
    assert bins_for_width(200, 100000) == 60
    assert bins_for_width(0, 0) == 5
    assert bins_for_width(80, 48) == 13  # by samples: int(2 * sqrt(48)) = 13, below (80 - 12) // 2 = 34 by width
    assert bins_for_width(30, 10000) == 9  # by width: (30 - 12) // 2


def test_chain_stages_joins_a_plan_into_one_curve():
    from tui_ft.tui.charts import RunSeries, chain_stages

    s1 = RunSeries("a", epochs=[0, 1, 2, 3], val=[0.5, 0.4, 0.3, 0.35], train_epochs=[1, 2, 3], train=[0.6, 0.5, 0.4])
    s2 = RunSeries("b", epochs=[0, 1, 2], val=[0.3, 0.25, 0.2], train_epochs=[1, 2], train=[0.3, 0.2])
    joined, bounds = chain_stages([s1, s2])
    assert bounds == [3]
    assert joined.run_id == "b"
    assert joined.epochs == [0, 1, 2, 3, 3, 4, 5]
    assert joined.val == [0.5, 0.4, 0.3, 0.35, 0.3, 0.25, 0.2]
    assert joined.train_epochs == [1, 2, 3, 4, 5]
    single, none = chain_stages([s1])
    assert single.epochs == s1.epochs and none == []
