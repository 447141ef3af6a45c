"""Tables that fit their width: identifying text stays whole or is shortened
in the middle, free text is shortened at its end, and the least important
columns are dropped first when a terminal is narrow.

:func:`fit_columns` and :func:`shorten` are pure (tested without an app);
:class:`FitTable` is a ``DataTable`` that keeps its rows' full text and lays
them out again with them whenever its width changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich.text import Text
from textual.widgets import DataTable


@dataclass(frozen=True)
class Col:
    """A column. ``priority``: higher stays longer (100: never dropped).
    ``shorten``: "middle" (ids: their start and end both matter), "end"
    (free text such as an error message, shown whole elsewhere) or "none"."""

    key: str
    label: str
    priority: int = 50
    shorten: str = "none"
    min_width: int = 8
    early: bool = False  # shortened before any column is dropped (a "middle" column that is not an id)


KEEP = 100  # never dropped
IMPORTANT = 90  # dropped only after ids were shortened


def cell_text(value: Any) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def plain_cell(value: Any) -> Any:
    """A table cell shown as plain text: a DataTable reads a str cell as Rich markup, which eats
    a bracketed word (``[sweep]``) of a file name or an error message. A str without ``[`` stays a str."""
    return Text(value) if isinstance(value, str) and "[" in value else value


def plain(*cells: Any) -> list[Any]:
    """:func:`plain_cell` of each cell."""
    return [plain_cell(c) for c in cells]


def shorten(text: str, width: int, how: str = "end") -> str:
    """``text`` in at most ``width`` characters, with "…" at its end or in its middle."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[: max(0, width)]
    if how == "middle":
        tail = (width - 1) // 2
        return text[: width - 1 - tail] + "…" + (text[-tail:] if tail else "")
    return text[: width - 1] + "…"


def fit_columns(cols: Sequence[Col], rows: Sequence[Sequence[Any]], width: int, pad: int = 2) -> dict[str, int]:
    """The columns to show and their widths for ``width`` cells (each column
    takes its width plus ``pad``). Order of sacrifice: shorten free text ("end")
    to its minimum, then "middle" columns marked ``early``, drop columns of
    priority below 90 from the lowest up, shorten ids in the middle, then drop
    the rest but those of priority 100. Room left at the end goes back to
    shortened columns, most important first."""
    natural = {}
    for i, c in enumerate(cols):
        natural[c.key] = max([len(c.label), *(len(cell_text(r[i])) for r in rows if i < len(r))])
    widths = dict(natural)
    by_key = {c.key: c for c in cols}

    def total() -> int:
        return sum(w + pad for w in widths.values())

    def squeeze(kind: str, early: bool = False) -> None:
        chosen = (c for c in cols if c.shorten == kind and c.key in widths and (c.early or not early))
        for c in sorted(chosen, key=lambda c: c.priority):
            over = total() - width
            if over <= 0:
                return
            floor = max(c.min_width, len(c.label))
            widths[c.key] = max(floor, widths[c.key] - over)

    if width <= 0 or total() <= width:
        return widths
    def drop(below: int) -> None:
        for c in sorted(cols, key=lambda c: c.priority):
            if total() <= width:
                return
            if c.priority < below and c.key in widths:
                del widths[c.key]

    squeeze("end")  # free text (shown whole elsewhere) first
    squeeze("middle", early=True)  # then columns marked early, keeping their start and end
    drop(IMPORTANT)  # then the less important columns go
    squeeze("middle")  # then ids lose their middle
    drop(KEEP)  # then the important ones (a status) before an id
    # a dropped column may have freed room: give it back to shortened ones, most important first
    for c in sorted((c for c in cols if c.key in widths), key=lambda c: -c.priority):
        slack = width - total()
        if slack <= 0:
            break
        widths[c.key] = min(natural[c.key], widths[c.key] + slack)
    return {k: widths[k] for k in by_key if k in widths}


class FitTable(DataTable):
    """A DataTable whose columns fit its width (see :func:`fit_columns`).

    Use :meth:`set_columns` once, then :meth:`set_rows` / :meth:`update_fitted`
    instead of ``add_row`` / ``update_cell``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cols: list[Col] = []
        self.full: dict[str, list[Any]] = {}  # row key -> its cells, whole
        self.widths: dict[str, int] = {}
        self.natural: dict[str, int] = {}
        self._fitted_for = -1

    def set_columns(self, cols: Sequence[Col]) -> None:
        self.cols = list(cols)
        self._layout()

    def available(self) -> int:
        if not self.size.width:
            return 0
        region = self.scrollable_content_region
        width = region.width
        if not self.show_vertical_scrollbar and len(self.full) + 1 > region.height:
            width -= self.styles.scrollbar_size_vertical  # a scrollbar will appear
        return width

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Replace all rows (key, cells), keeping the cursor on the same key."""
        self.full = {key: list(cells) for key, cells in rows}
        self._layout()

    def _shown(self, key: str, value: Any) -> Any:
        col = next(c for c in self.cols if c.key == key)
        w = self.widths.get(key)
        text = cell_text(value)
        if w is None or len(text) <= w:
            return plain_cell(value)
        short = shorten(text, w, "middle" if col.shorten == "middle" else "end")
        return Text(short, style=value.style) if isinstance(value, Text) else plain_cell(short)

    def _layout(self) -> None:
        cursor = self._cursor_key()
        avail = self.available()
        rows = list(self.full.values())
        self.natural = fit_columns(self.cols, rows, 0)
        self.widths = fit_columns(self.cols, rows, avail, pad=2 * self.cell_padding)
        self._fitted_for = avail
        self.clear(columns=True)
        for c in self.cols:
            if c.key in self.widths:
                self.add_column(c.label, key=c.key, width=self.widths[c.key])
        index = {c.key: i for i, c in enumerate(self.cols)}
        for key, cells in self.full.items():
            self.add_row(*(self._shown(k, cells[index[k]]) for k in self.widths), key=key)
        if cursor is not None and cursor in self.full:
            try:
                self.move_cursor(row=self.get_row_index(cursor), animate=False)
            except Exception:  # noqa: BLE001 - the row is gone
                pass

    def _cursor_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001
            return None

    def update_fitted(self, row_key: str, col_key: str, value: Any) -> None:
        """Change one cell; lay the table out again when it no longer fits its column."""
        cells = self.full.get(row_key)
        index = next((i for i, c in enumerate(self.cols) if c.key == col_key), None)
        if cells is None or index is None:
            return
        cells[index] = value
        if col_key not in self.widths:
            return
        if len(cell_text(value)) > self.natural.get(col_key, 0):
            self._layout()  # wider than anything in its column before: fit again
        else:
            self.update_cell(row_key, col_key, self._shown(col_key, value))

    def on_resize(self) -> None:
        if self.cols and self.available() != self._fitted_for:
            self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        if self.available() != self._fitted_for:
            self._layout()
