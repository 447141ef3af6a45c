"""Plot widgets: they draw what :mod:`tui_ft.tui.charts` computes.

Each widget keeps its input data and rebuilds its plotext figure from it on
:meth:`redraw` (called when the data change, and on resize so the number of
points follows the widget's width).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual_plotext import PlotextPlot

from tui_ft.tui.charts import (
    Curve,
    Predictions,
    RunSeries,
    bins_for_width,
    curve_bounds,
    error_histogram,
    error_stats,
    int_ticks,
    learning_curves,
    log_ticks,
    max_points_for_width,
    metric_label,
    nice_ticks,
    parity_data,
    short_id,
    LEGACY_UNIT,
    unit_suffix,
)


class _Plot(PlotextPlot):
    DEFAULT_CSS = """
    _Plot {
        min-height: 6;
    }
    """

    def on_mount(self) -> None:
        # PlotextPlot's own on_mount (theme registration) runs too: Textual
        # calls the handler of each class in the MRO
        self.redraw()

    _stale = False

    def on_resize(self) -> None:
        self.redraw()

    def on_show(self) -> None:
        if self._stale:
            self.redraw()

    @property
    def plot_width(self) -> int:
        return self.size.width or 80

    def redraw(self) -> None:
        """Rebuild the figure from the widget's data, or, while it is not on
        screen (another tab), when it is shown again."""
        if not self.is_on_screen:
            self._stale = True
            return
        self._stale = False
        self._drawn_size = self.size
        self._draw()

    _drawn_size = None  # the widget's size when the figure was last built (its ticks fit that size)

    def render(self):
        if self._drawn_size is not None and self.size != self._drawn_size:
            # laid out again since the figure was built (a pane above it changed): the ticks
            # were placed for another height; build it for this one before it is drawn
            self._drawn_size = self.size
            self._draw()
        return super().render()

    def _draw(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _blank(self, title: str) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        plt.xticks([])
        plt.yticks([])
        self.refresh()


class CurvePlot(_Plot):
    """Validation and training MAE against epoch for one run, plus overlays.

    The legend is not drawn by plotext (it would hide the first epochs in the
    top-left corner); each redraw posts :class:`CurvePlot.Redrawn` with the
    curves and :class:`CurveChart` shows them in a line below the plot."""

    log_scale: reactive[bool] = reactive(False)

    class Redrawn(Message):
        def __init__(self, curves: list[Curve]) -> None:
            super().__init__()
            self.curves = curves

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.primary: RunSeries | None = None
        self.overlays: list[RunSeries] = []
        self.boundaries: list[float] = []
        self.note = ""  # what the joined curve is, in its title: "plan: 2 stages", "after its parent"
        self.metric: str | None = None  # the named metric drawn ("force_mae"); None: the selection value (MAE)
        self.title_text = ""  # the title last drawn
        self.empty_text = "no run selected: launch a preset (l) or pick a run above"

    @property
    def data(self) -> dict[str, dict[str, list]]:
        """What is plotted, per run id: ``epochs``, ``val``, ``train_epochs``, ``train``."""
        out = {}
        for s in ([self.primary] if self.primary else []) + self.overlays:
            out[s.run_id] = {"epochs": list(s.epochs), "val": list(s.val), "train_epochs": list(s.train_epochs), "train": list(s.train)}
        return out

    def set_runs(
        self,
        primary: RunSeries | None,
        overlays: list[RunSeries] | None = None,
        *,
        boundaries: list[float] | None = None,
        note: str = "",
        metric: str | None = None,
    ) -> None:
        """``boundaries``: x positions where the next joined run starts (a plan's next stage, or a
        run continued after its parent's last epoch), marked with a vertical line; ``note`` says
        which in the title (``plan: 2 stages``, ``after its parent``)."""
        self.primary = primary
        self.boundaries = list(boundaries or [])
        self.note = note if self.boundaries else ""
        self.metric = metric
        if overlays is not None:
            self.overlays = overlays
        self.redraw()

    def watch_log_scale(self) -> None:
        self.redraw()

    def _n_yticks(self) -> int:
        """How many y ticks to ask for: about one per three rows, and never more than one per
        two rows of the plot area (title and x axis take four), so no two share a row (in a
        small terminal two labels on one row showed either, depending on drawing order)."""
        height = self.size.height or 20
        return max(2, min(max(4, height // 3), (height - 4) // 2 + 1))

    def _draw(self) -> None:
        curves = learning_curves(
            self.primary, self.overlays, log=self.log_scale, max_points=max_points_for_width(self.plot_width)
        )
        self.post_message(self.Redrawn(curves))
        if not curves:
            if self.primary is not None:
                self._blank(f"{short_id(self.primary.run_id, 40)}: waiting for epoch 0")
            else:
                self._blank(self.empty_text)
            return
        plt = self.plt
        plt.clear_figure()
        for c in curves:
            plt.plot(c.xs, c.ys, color=c.color, marker=c.marker)
        for x in self.boundaries:  # where each joined run starts
            plt.vline(x, "gray")
        bounds = curve_bounds(curves)
        if bounds is not None:
            lo, hi = bounds
            plt.xlim(lo, hi)
            plt.xticks(int_ticks(int(lo), int(hi), max(2, self.plot_width // 10)))
        ys = [y for c in curves for y in c.ys]
        if self.log_scale and ys:
            # log10 is plotted; the ticks say the MAE itself, people read MAE, not its logarithm
            ylo, yhi = min(ys), max(ys)
            if yhi - ylo < 1e-9:
                ylo, yhi = ylo - 0.05, yhi + 0.05
            positions, labels = log_ticks(ylo, yhi, self._n_yticks())
            plt.ylim(min([ylo, *positions]), max([yhi, *positions]))
            plt.yticks(positions, labels)
        elif ys:
            # round values at even steps (plotext's own ticks are uneven: 0.93, 0.83, 0.62, ...)
            ylo, yhi = min(ys), max(ys)
            if yhi - ylo < 1e-9:
                ylo, yhi = ylo - 0.05, yhi + 0.05
            positions, labels = nice_ticks(ylo, yhi, self._n_yticks())
            if positions:
                plt.ylim(min([ylo, *positions]), max([yhi, *positions]))
                plt.yticks(positions, labels)
        title = short_id(self.primary.run_id, 48) if self.primary else "overlay"
        if self.metric:  # a named metric: the title says which, val and train
            what = f"val/train {metric_label(self.metric)}"
            room = min(30, self.plot_width - len(what) - 6 - (len(self.note) + 3 if self.note else 0))
            title = (short_id(self.primary.run_id, room) + ": " if self.primary and room >= 8 else "") + what
        if self.note:
            title += f" ({self.note})"
        self.title_text = title
        plt.title(title)
        plt.xlabel("epoch")
        u = self.primary.unit if self.primary else None
        shown = LEGACY_UNIT if u is None else u
        if self.metric:
            label = metric_label(self.metric)
            plt.ylabel(label[:-1] + ", log scale)" if self.log_scale and label.endswith(")")
                       else label + (" (log scale)" if self.log_scale else ""))
        elif self.log_scale:
            plt.ylabel(f"MAE ({shown}, log scale)" if shown else "MAE (log scale)")
        else:
            plt.ylabel(f"MAE{unit_suffix(u)}")
        self.refresh()


def marker_sample(marker: str) -> str:
    """How a curve's marker looks in the legend (the same glyph as in the plot)."""
    return {"braille": "⣿⣿", "dot": "••", "hd": "▀▀", "fhd": "▛▛", "sd": "██"}.get(marker, (marker * 2)[:2])


def legend_text(curves: list[Curve]) -> Text:
    text = Text(no_wrap=False)
    for i, c in enumerate(curves):
        if i:
            text.append("   ")
        r, g, b = c.color
        text.append(marker_sample(c.marker) + " ", style=f"bold rgb({r},{g},{b})")
        text.append(c.label)
    return text


class Legend(Widget):
    """One line of coloured labels. Not a Static: Static.update() relayouts the
    whole screen, and the legend changes with every selected run."""

    DEFAULT_CSS = """
    Legend {
        height: 1;
        padding: 0 1;
    }
    """

    text: reactive[Text] = reactive(Text, layout=False)

    def render(self) -> Text:
        return self.text


class CurveChart(Vertical):
    """The learning-curve plot with its legend line."""

    DEFAULT_CSS = """
    CurveChart {
        height: 1fr;
    }
    """

    def __init__(self, *, plot_id: str = "curve", **kwargs) -> None:
        super().__init__(**kwargs)
        self.plot_id = plot_id

    def compose(self) -> ComposeResult:
        yield CurvePlot(id=self.plot_id)
        yield Legend(classes="curve-legend")

    def on_curve_plot_redrawn(self, message: CurvePlot.Redrawn) -> None:
        message.stop()
        self.query_one(Legend).text = legend_text(message.curves)


class _TestSetPlot(_Plot):
    """A chart of one run's test-set predictions; ``default_note`` shows until there are some."""

    default_note = ""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_id: str | None = None
        self.predictions: Predictions | None = None
        self.note = self.default_note

    def set_predictions(self, run_id: str | None, predictions: Predictions | None, note: str = "") -> None:
        self.run_id = run_id
        self.predictions = predictions
        self.note = note or self.default_note
        self.redraw()


def captioned(run_id: str | None, caption: str | None, width: int) -> str | None:
    """A plot's caption, after the run's id when the plot is wide enough for both; a narrow
    plot drops the caption's last parts (parted by two spaces: ``"force error (meV/Å)  RMSE 35"``)."""
    if not caption:
        return None
    parts = caption.split("  ")
    while len(parts) > 1 and len("  ".join(parts)) > width - 6:
        parts.pop()
    caption = "  ".join(parts)
    room = width - len(caption) - 12
    return f"{short_id(run_id, min(room, 30))}  {caption}" if run_id and room >= 16 else caption


class ParityPlot(_TestSetPlot):
    """Predicted against true formation energy on the test set, with y = x."""

    default_note = "the parity plot appears when a run finishes"

    def _draw(self) -> None:
        p = self.predictions
        if not p:
            self._blank(self.note)
            return
        xs, ys, (lo, hi) = parity_data(p.true, p.pred, max_points=max(200, self.plot_width * 20))
        st = error_stats(p.true, p.pred)
        plt = self.plt
        plt.clear_figure()
        plt.plot([lo, hi], [lo, hi], color=(150, 150, 150), marker="braille", label="y = x")
        plt.scatter(xs, ys, color=(86, 180, 233), marker="•" if len(xs) <= 400 else "braille", label="test")
        plt.xlim(lo, hi)
        plt.ylim(lo, hi)
        # the same range and the same ticks on both axes (as many as the shorter axis holds)
        n_ticks = max(3, min(self.plot_width // 12, (self.size.height or 20) // 3))
        ticks, labels = nice_ticks(lo, hi, n_ticks)
        for more in range(n_ticks + 1, n_ticks + 5):  # a round step can leave only two inside the range
            if len(ticks) >= 3:
                break
            ticks, labels = nice_ticks(lo, hi, more)
        plt.xticks(ticks, labels)
        plt.yticks(ticks, labels)
        title = f"{short_id(self.run_id or '', 36)}  n={st.n}  MAE {st.mae:.4f}" if st else "parity"
        plt.title(captioned(self.run_id, p.caption, self.plot_width) or title)
        plt.xlabel(f"true{unit_suffix(p.unit)}")
        plt.ylabel(f"predicted{unit_suffix(p.unit)}")
        self.refresh()


class ErrorPlot(_TestSetPlot):
    """Histogram of prediction errors (pred - true) on the test set."""

    default_note = "the error histogram appears when a run finishes"

    def _draw(self) -> None:
        p = self.predictions
        if not p:
            self._blank(self.note)
            return
        centres, counts, width = error_histogram(p.true, p.pred, bins_for_width(self.plot_width, len(p)))
        st = error_stats(p.true, p.pred)
        plt = self.plt
        plt.clear_figure()
        plt.bar(centres, counts, color=(230, 159, 0), width=0.9)
        if centres:
            half = width / 2
            ticks, labels = nice_ticks(centres[0] - half, centres[-1] + half, max(3, self.plot_width // 12))
            plt.xticks(ticks, labels)
            plt.yticks(int_ticks(0, max(counts), max(2, (self.size.height or 20) // 4)))
        if p.caption:
            plt.title(captioned(self.run_id, p.caption, self.plot_width))
        elif st:
            plt.title(f"{short_id(self.run_id or '', 30)}  mean {st.mean:+.4f}  RMSE {st.rmse:.4f}  max {st.max_abs:.3f}")
        plt.xlabel(f"pred - true{unit_suffix(p.unit)}")
        plt.ylabel("count")
        self.refresh()
