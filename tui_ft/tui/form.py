"""The "new preset" form: a copy of a preset with some fields changed.

Every change is validated with ``Preset.with_changes`` (the same schema as
the loader), and each problem is shown under its field. Saving writes
``presets/<name>.toml`` with ``save_preset`` and asks before overwriting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select

from tui_ft.core.config.presets import Preset
from tui_ft.core.config.fields import PresetError
from tui_ft.core.config.dump import save_preset
from tui_ft.tui.modals import ConfirmScreen


@dataclass(frozen=True)
class FormField:
    id: str
    key: str  # the preset field, "optim.lr"
    label: str
    hint: str = ""


FIELDS: tuple[FormField, ...] = (
    FormField("name", "run.name", "Name", "file presets/<name>.toml; letters, digits, . _ -"),
    FormField("description", "run.description", "Description", "what this preset is for"),
    FormField("source", "data.source", "Data source", '"demo", "matbench_mp_e_form" or a .json/.json.gz file'),
    FormField("target", "data.target", "Target column", "e.g. e_form"),
    FormField("fraction", "data.fraction", "Data fraction", "share of the training part, (0, 1]"),
    FormField("fold", "data.fold", "Fold", "Matbench fold 0-4"),
    FormField("mode", "finetune.mode", "Mode"),
    FormField("init", "model.init", "Init checkpoint", "RUN@best, PRESET@best or empty (pretrained CHGNet)"),
    FormField("optimizer", "optim.optimizer", "Optimizer"),
    FormField("lr", "optim.lr", "Learning rate", "e.g. 1e-4"),
    FormField("backbone_lr", "finetune.backbone_lr", "Backbone lr", "full mode only; empty = same as lr"),
    FormField("scheduler", "optim.scheduler", "Scheduler"),
    FormField("epochs", "train.epochs", "Epochs"),
    FormField("patience", "train.patience", "Patience", "epochs without improvement before stopping; 0 = never"),
    FormField("batch_size", "train.batch_size", "Batch size"),
    FormField("device", "train.device", "Device", '"auto", "cpu", "cuda" or "cuda:N"'),
)
BY_KEY = {f.key: f for f in FIELDS}
# fields shown as a choice (Select) and their options: (label, value)
CHOICES: dict[str, list[tuple[str, str]]] = {
    "mode": [("head: train the readout head only", "head"), ("full: train all layers", "full")],
    "optimizer": [("adam", "adam"), ("adamw", "adamw"), ("sgd", "sgd")],
    "scheduler": [("none: constant lr", "none"), ("cosine: cosine decay to 0", "cosine")],
}
# empty means "unset" for these (the schema's default applies); an empty required field says so
MAY_BE_EMPTY = {"backbone_lr", "init", "description"}
# the fields whose change makes the inherited description out of date
SETTINGS = tuple(f.id for f in FIELDS if f.id not in ("name", "description"))


def derived_description(base: Preset, values: dict[str, str]) -> str | None:
    """A description for a preset made from ``base`` with ``values``: what
    changed (``None`` when no setting did: the base's description still holds)."""
    before = initial_values(base, set())
    changed = [f"{FIELD_LABEL[k]} {before[k] or '-'} → {values.get(k, '') or '-'}" for k in SETTINGS if values.get(k, "") != before[k]]
    if not changed:
        return None
    return f"from {base.name}: " + ", ".join(changed)


FIELD_LABEL = {f.id: f.label.lower() for f in FIELDS}


def initial_values(base: Preset, existing_names: set[str]) -> dict[str, str]:
    name = base.name
    if name in existing_names:
        for i in range(2, 1000):
            cand = f"{base.name}_{i}"
            if cand not in existing_names:
                name = cand
                break
    return {
        "name": name,
        "description": base.run.description,
        "source": base.data.source,
        "target": base.data.target,
        "device": base.train.device,
        "optimizer": base.optim.optimizer,
        "scheduler": base.optim.scheduler,
        "patience": str(base.train.patience),
        "mode": base.finetune.mode,
        "lr": f"{base.optim.lr:g}",
        "backbone_lr": "" if base.finetune.backbone_lr is None else f"{base.finetune.backbone_lr:g}",
        "epochs": str(base.train.epochs),
        "batch_size": str(base.train.batch_size),
        "fraction": f"{base.data.fraction:g}",
        "fold": str(base.data.fold),
        "init": base.model.init,
    }


def validate(base: Preset, values: dict[str, str]) -> tuple[Preset | None, dict[str, str]]:
    """The new preset, or the problems by form field id (``""`` for problems
    that belong to no field of the form)."""
    changes: dict[str, object] = {f.key: values.get(f.id, "") for f in FIELDS}
    errors: dict[str, str] = {}
    for f in FIELDS:
        if f.id not in MAY_BE_EMPTY and not str(values.get(f.id, "")).strip():
            errors[f.id] = "enter a value" + (f" ({f.hint})" if f.hint else "")
    if errors:
        return None, errors
    try:
        return base.with_changes(changes), {}
    except PresetError as exc:
        for e in exc.errors:
            fld = BY_KEY.get(e.field)
            fid = fld.id if fld else ""
            msg = e.message if fld else f"{e.field}: {e.message}"
            errors[fid] = f"{errors[fid]}; {msg}" if fid in errors else msg
        return None, errors


class PresetForm(ModalScreen["Path | None"]):
    """Make a new preset from ``base``; dismisses with the saved path or None."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, base: Preset, presets_dir: Path, *, refs: list[str] | None = None, resolve_init=None) -> None:
        super().__init__(classes="dialog-screen")
        self.base = base
        self.presets_dir = presets_dir
        self.refs = refs or []
        self.resolve_init = resolve_init
        existing = {p.stem for p in presets_dir.glob("*.toml")} if presets_dir.is_dir() else set()
        self.values = initial_values(base, existing)
        self.errors: dict[str, str] = {}
        self.saved: Path | None = None
        # the description follows the settings (says what changed) until the user edits it
        self.description_auto = self.values["description"]
        self.description_edited = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="preset-form"):
            yield Label(f"New preset from {self.base.name}", classes="dialog-title", markup=False)
            with VerticalScroll(classes="dialog-body"):
                for f in FIELDS:
                    with Horizontal(classes="form-row"):
                        yield Label(f.label, classes="form-label", markup=False)
                        if f.id in CHOICES:
                            yield Select(
                                CHOICES[f.id],
                                value=self.values[f.id],
                                allow_blank=False,
                                compact=True,
                                id=f"f-{f.id}",
                            )
                        else:
                            yield Input(
                                self.values[f.id],
                                id=f"f-{f.id}",
                                compact=True,
                                placeholder=f.hint,
                                suggester=SuggestFromList(self.refs, case_sensitive=True) if f.id == "init" and self.refs else None,
                            )
                    yield Label("", id=f"e-{f.id}", classes="form-error", markup=False)  # messages name [sections]
                yield Label("", id="e-general", classes="form-error", markup=False)
                yield Label("", id="init-note", classes="form-note", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#f-name", Input).focus()
        self._validate()

    def _read(self) -> dict[str, str]:
        vals = {}
        for f in FIELDS:
            w = self.query_one(f"#f-{f.id}")
            vals[f.id] = str(w.value) if not isinstance(w, Select) or w.value is not Select.BLANK else ""
        return vals

    def _follow_description(self) -> None:
        """Keep the inherited description honest: once a setting changes it
        says what was changed from the base preset, unless the user wrote one."""
        box = self.query_one("#f-description", Input)
        if box.value != self.description_auto:
            self.description_edited = True
        if self.description_edited:
            return
        derived = derived_description(self.base, self._read())
        want = self.base.run.description if derived is None else derived
        if box.value != want:
            self.description_auto = want
            with box.prevent(Input.Changed):
                box.value = want

    def _validate(self) -> Preset | None:
        self._follow_description()
        self.values = self._read()
        preset, self.errors = validate(self.base, self.values)
        for f in [*FIELDS, FormField("", "", "")]:
            label = self.query_one(f"#e-{f.id or 'general'}", Label)
            msg = self.errors.get(f.id, "")
            label.update(msg)
            label.display = bool(msg)
            if f.id:
                self.query_one(f"#f-{f.id}").set_class(bool(msg), "-invalid")
        note = ""
        init = self.values.get("init", "").strip()
        if preset is not None and init and self.resolve_init is not None:
            try:
                self.resolve_init(init)
            except LookupError as exc:
                note = f"note: {exc.args[0] if exc.args else exc} (the run will fail until it exists)"
        note_label = self.query_one("#init-note", Label)
        note_label.update(note)
        note_label.display = bool(note)
        return preset

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        self._validate()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        preset = self._validate()
        if preset is None:
            first = next((f.id for f in FIELDS if f.id in self.errors), None)
            if first:
                self.query_one(f"#f-{first}").focus()
            self.notify("fix the fields marked in red first", severity="error", timeout=4)
            return
        path = self.presets_dir / f"{preset.name}.toml"
        if path.exists():

            def answered(yes: bool | None) -> None:
                if yes:
                    self._write(preset, path)

            self.app.push_screen(
                ConfirmScreen(f"{path.name} already exists in presets/. Overwrite it?", yes="Overwrite", danger=True),
                answered,
            )
            return
        self._write(preset, path)

    def _write(self, preset: Preset, path: Path) -> None:
        try:
            self.presets_dir.mkdir(parents=True, exist_ok=True)
            save_preset(preset, path)
        except (OSError, ValueError) as exc:
            label = self.query_one("#e-general", Label)
            label.update(f"could not save {path}: {exc}")
            label.display = True
            return
        self.saved = path
        self.dismiss(path)
