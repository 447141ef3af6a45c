"""Modal screens: confirmation, help, text viewer, preset picker, error."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from pygments.token import Comment, Generic, Keyword, Literal, Name, Number, Operator, Punctuation, String, Token
from rich.style import Style
from rich.syntax import ANSISyntaxTheme, Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.dom import DOMNode
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option


# The TOML preview's colours: bright ANSI colours only, so that with NO_COLOR
# (Textual turns each colour into its grey) every token keeps a WCAG contrast
# of at least 4.5:1 on the dark background (tests/test_tui_first_hour.py).
PREVIEW_THEME = ANSISyntaxTheme(
    {
        Token: Style(color="default"),
        Comment: Style(color="bright_blue", italic=True),
        Keyword: Style(color="bright_cyan", bold=True),
        Name: Style(color="default"),
        Name.Tag: Style(color="bright_cyan", bold=True),
        Name.Attribute: Style(color="default"),
        String: Style(color="bright_green"),
        Number: Style(color="bright_yellow"),
        Literal: Style(color="bright_yellow"),
        Operator: Style(color="default"),
        Punctuation: Style(color="default"),
        Generic.Error: Style(color="bright_red", bold=True),
    }
)


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismiss with True for yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No", danger: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.yes = yes
        self.no = no
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)  # run ids, file names: plain text
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button(f"{self.no} (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no" if self.danger else "#yes", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PathPrompt(ModalScreen["str | None"]):
    """Ask for a path (a data source, a structure file or a folder); enter returns it, escape None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Input(placeholder=self.placeholder, id="path-input")
            yield Label("enter: go   escape: cancel", classes="dialog-hint")

    @on(Input.Submitted, "#path-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """Show text (an error, a preset as TOML) until escape."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, title: str, body: str, *, language: str | None = None, error: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.body = body
        self.language = language
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide" + (" error" if self.error else "")):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll(classes="dialog-body"):
                if self.language:
                    yield Static(Syntax(self.body, self.language, theme=PREVIEW_THEME, word_wrap=True, background_color="default"))
                else:
                    yield Static(Text(self.body))
            yield Label("escape: close", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)


def binding_rows(nodes: Iterable[DOMNode], key_display: Callable[[Binding], str]) -> list[tuple[str, str]]:
    """(keys, what they do) for the bindings of ``nodes``, one row per action,
    in the order they are declared; the text is the binding's tooltip, else its
    description. Textual's own system bindings are left out."""
    rows: dict[str, tuple[list[str], str]] = {}
    for node in nodes:
        for _key, binding in node._bindings:
            if binding.system or not binding.description:
                continue
            keys, _text = rows.pop(binding.action, ([], ""))  # placed where it was declared last
            shown = key_display(binding)
            if shown not in keys:
                keys.append(shown)
            rows[binding.action] = (keys, binding.tooltip or binding.description)
    return [(" / ".join(keys), text) for keys, text in rows.values()]


class HelpScreen(ModalScreen[None]):
    """The keys, by tab (see :func:`binding_rows`)."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__(classes="dialog-screen")
        self.sections = sections

    def compose(self) -> ComposeResult:
        text = Text()
        for i, (title, rows) in enumerate(self.sections):
            if i:
                text.append("\n")
            text.append(f"{title}\n", style="bold underline")
            for key, desc in rows:
                text.append(f"  {key:<14}", style="bold cyan")
                text.append(f"{desc}\n")
        with Vertical(classes="dialog wide"):
            yield Label("tui-ft keys", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(text, id="help-text")
            yield Label("escape: close", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)


class PresetPicker(ModalScreen["Path | None"]):
    """Pick a preset to continue training from a checkpoint."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, ref: str, choices: list[tuple[Path, str]]) -> None:
        super().__init__(classes="dialog-screen")
        self.ref = ref
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Continue from {self.ref}: pick a preset", classes="dialog-title", markup=False)
            yield Static(
                "The run uses the preset with model.init set to this checkpoint "
                "(data, mode, lr and epochs come from the preset).",
                classes="dialog-text",
            )
            yield OptionList(*[Option(Text(label), id=str(path)) for path, label in self.choices], id="picker")
            yield Label("enter: launch   escape: cancel", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(Path(event.option.id) if event.option.id else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
