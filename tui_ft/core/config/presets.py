"""Fine-tuning presets: a strict TOML schema, its loader, and a TOML writer.

A preset is a small TOML file with the tables ``[run]``, ``[data]``,
``[model]`` (optional), ``[finetune]``, ``[optim]`` and ``[train]``. Every
key is checked: unknown tables and keys are errors, values must have the
right type and range, and each error names the file, the line and the field,
for example::

    presets/x.toml:7: data.fold: expected an integer from 0 to 4, got 7

The schema is the pydantic v2 models below (``RunCfg`` ... ``TrainCfg``): one
line per field, its type, range and default. Files are validated strictly (no
strings for numbers, no booleans for integers); strings typed into the form are
first converted in pydantic's lax mode (:func:`coerce_form_value`). pydantic's
error locations are the dotted keys; :func:`_message` rewords its errors in
TOML terms and the line comes from :func:`tui_ft.core.config.tomlfile.locate_lines`.
Rules between fields (head mode vs backbone options, ``init`` vs
``pretrained``, the demo data's one target) are in :func:`_cross_field`.

Checks that need the file system (the data file exists, the target column is
in it, the ``init`` checkpoint exists) live in :func:`check_resources`, so
that a preset can be parsed anywhere.

This module must stay importable without torch, chgnet, pymatgen or textual.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tui_ft.core.common.paths import DEMO_POTENTIAL_SOURCE, DEMO_SOURCE, MATBENCH_SOURCE
from tui_ft.core.config.tomlfile import (
    TomlFileError,
    line_of,
    locate_lines,
    parse_toml,
    read_text,
)

__all__ = [
    "SECTIONS",
    "SECTION_MODELS",
    "PresetError",
    "PresetErrors",
    "RunCfg",
    "DataCfg",
    "ModelCfg",
    "FinetuneCfg",
    "OptimCfg",
    "TrainCfg",
    "ClusterCfg",
    "SweepCfg",
    "SweepDim",
    "Preset",
    "parse_preset",
    "load_preset",
    "preset_from_dict",
    "is_plan_text",
    "locate_lines",
    "line_of",
    "check_name",
    "check_field",
    "coerce_form_value",
    "show_value",
    "PRETRAINED_VERSIONS",
    "LR_GROUPS",
    "MATBENCH_SOURCE",
    "DEMO_SOURCE",
]


from tui_ft.core.config.fields import (  # noqa: E402
    DEMO_TARGET,
    LR_GROUPS,
    PRETRAINED_VERSIONS,
    DataFormat,
    Ddp,
    FrameFormat,
    Loss,
    LrFactor,
    LrGroup,
    Mode,
    Optimizer,
    Precision,
    PresetError,
    PresetErrors,
    Pretrained,
    Scheduler,
    Selection,
    SplitKind,
    TaskKind,
    WandbMode,
    _device,
    _init,
    _int,
    _num,
    _source,
    _target,
    _test_source,
    _text,
    _unit,
    check_name,
    show_value,
)
from tui_ft.core.config.toml_errors import (  # noqa: E402
    _check_sweep,
    _errors,
    _field_type,
    _message,
    _space_field,
)

# --------------------------------------------------------------------------- errors


# --------------------------------------------------------------------------- value checks


# --------------------------------------------------------------------------- schema


class _Table(BaseModel):
    """A preset table: strict types (a file says what it means), no unknown keys, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")


# One line per field: the type (with its range) and the default; no default = required.


class RunCfg(_Table):
    name: _text(check_name)
    description: str = ""


class DataCfg(_Table):
    source: _text(_source)
    target: _text(_target) = "e_form"
    fold: _int(0, 4) = 0
    fraction: _num(gt=0.0, le=1.0) = 1.0
    val_fraction: _num(gt=0.0, le=0.5) = 0.1
    seed: _int(0) = 0
    test_limit: _int(0) = 0
    format: DataFormat = "auto"  # auto: told from the path (sources.detect_format)
    per_atom: bool = False  # divide each target by the structure's number of atoms (totals)
    split: SplitKind = "matbench"  # matbench: the 5 Matbench folds (fold); random: seeded (test_fraction)
    test_fraction: _num(gt=0.0, lt=1.0) = 0.2  # split = "random" only
    test_source: _text(_test_source) = ""  # a separate held-out test file (any format); overrides split
    unit: Optional[_text(_unit)] = None  # None: units.default_unit(target, source)
    skip_bad_rows: bool = False  # own data (not Matbench JSON): train without unusable rows instead of refusing


class TaskCfg(_Table):
    """``[task]``: what the model is trained to predict. ``property`` (default): the scalar
    ``data.target`` per structure. ``potential``: energies, forces, stresses and magnetic
    moments of frames (tui_ft.core.data.frames reads them; tui_ft.core.task.potential trains)."""

    kind: TaskKind = "property"
    # potential only. A weight left out is chgnet's Trainer default (1 / 1 / 0.1 / 0.1) where every
    # frame has that label and 0 (not trained) otherwise; a weight > 0 on a label the data lacks is an error
    energy_weight: Optional[_num(ge=0.0, le=1000.0)] = None
    force_weight: Optional[_num(ge=0.0, le=1000.0)] = None
    stress_weight: Optional[_num(ge=0.0, le=1000.0)] = None
    magmom_weight: Optional[_num(ge=0.0, le=1000.0)] = None
    loss: Loss = "mse"  # per target: mse, huber (huber_delta) or l1 (mae)
    huber_delta: _num(gt=0.0, le=100.0) = 0.1
    selection: Selection = "val_loss"  # what "best" minimises: the weighted validation loss, or one MAE
    max_atoms_per_batch: _int(0, 10_000_000) = 0  # batches bounded by atoms as well as train.batch_size; 0 = no bound
    format: FrameFormat = "auto"  # the frames' reader (auto: told from the path and content)
    energy_key: str = ""  # ase/asedb: info key of the energy ("" = the calculator's results)
    forces_key: str = ""  # ase/asedb: arrays key of the forces
    stress_key: str = ""  # ase/asedb: info key of the stress (eV/Å³, ASE sign)
    magmom_key: str = ""  # ase/asedb: arrays key of the magnetic moments
    vasp_steps: Union[Literal["all", "last"], _int(1, 100000)] = "all"  # vasp: every ionic step, the last, or every N-th
    shear_order: Optional[str] = None  # mlearn: virial_stress's shear order ("xy yz zx"); unset/"auto" = told from the file

    @field_validator("shear_order")
    @classmethod
    def _shear_names(cls, v: str | None) -> str | None:
        from tui_ft.core.common.units import shear_order_names

        names = None if v is None else shear_order_names(v)  # "auto" is None: left out of the dump
        return None if names is None else " ".join(names)


class LogCfg(_Table):
    """Optional metric loggers (off by default; each needs its pip extra)."""

    tensorboard: bool = False
    tensorboard_dir: str = ""  # "" = logs/<run_id>/tensorboard
    mlflow: bool = False
    mlflow_tracking_uri: str = ""  # "" = sqlite:///<logs>/mlflow.db
    mlflow_experiment: str = "tui-ft"
    wandb: bool = False
    wandb_mode: WandbMode = "offline"
    wandb_project: str = "tui-ft"
    notify: str = ""  # a command run when the run ends, the final event as JSON on stdin (tui_ft.core.train.notify)


class ModelCfg(_Table):
    pretrained: Pretrained = "0.3.0"
    init: _text(_init) = ""


class FinetuneCfg(_Table):
    mode: Mode
    refit_atomref: bool = True  # the loader's default follows model.init: no refit from a checkpoint
    backbone_lr: Optional[_num(gt=0.0, le=1.0)] = None
    lr_factors: dict[LrGroup, LrFactor] = Field(default_factory=dict)
    unfreeze_every: _int(0) = 0

    @field_validator("lr_factors")
    @classmethod
    def _in_group_order(cls, v: dict[str, float]) -> dict[str, float]:
        return {g: v[g] for g in LR_GROUPS if g in v}

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash((self.mode, self.refit_atomref, self.backbone_lr, tuple(self.lr_factors.items()), self.unfreeze_every))


# the defaults of optim.lr by finetune.mode (filled in by Preset._defaults_by_mode): the shipped
# presets' values, a fresh readout head learns at 1e-3, a pretrained backbone needs 1e-4
DEFAULT_LR: dict[str, float] = {"head": 1e-3, "full": 1e-4}


class OptimCfg(_Table):
    optimizer: Optimizer = "adam"
    lr: _num(gt=0.0, le=1.0)  # default DEFAULT_LR[finetune.mode] in a preset
    weight_decay: _num(ge=0.0, le=1.0) = 0.0
    scheduler: Scheduler = "none"
    warmup_epochs: _int(0, 10000) = 0  # lr rises linearly, step by step, over these epochs, then the scheduler (tui_ft.core.train.recipe)
    clip_grad_norm: _num(ge=0.0, le=1e6) = 0.0  # the gradient's total L2 norm capped before each step; 0 = off


class TrainCfg(_Table):
    epochs: _int(1, 10000) = 10
    batch_size: _int(1, 4096) = 16
    patience: _int(0) = 0
    device: _text(_device) = "auto"
    seed: _int(0, 2**32 - 1) = 0  # numpy's seed range
    loss: Loss = "mse"
    ddp: Ddp = "auto"  # "auto": one run across the processes torchrun starts; "off": each process alone
    precision: Precision = "fp32"  # autocast: "bf16" (CPU or CUDA) or "fp16" (CUDA, with a GradScaler)
    ema: _num(ge=0.0, lt=1.0) = 0.0  # decay of an exponential moving average of the weights, evaluated and saved; 0 = off
    swa_start: _int(0, 10000) = 0  # from this epoch on, the weights are averaged (SWA) into their own swa.pt; 0 = off
    swa_lr: Optional[_num(gt=0.0, le=1.0)] = None  # the constant lr from swa_start on (None: the schedule's)


class ClusterCfg(_Table):
    """``[cluster]``: where ``tui-ft matbench --executor slurm`` submits each fold (through submitit)."""

    partition: str = ""  # "" = the cluster's default partition
    gpus_per_node: _int(0, 64) = 1
    cpus_per_task: _int(1, 1024) = 8
    mem_gb: _int(1, 65536) = 64
    timeout_min: _int(1, 43200) = 1440  # the job's time limit; a timed-out fold is requeued from its last.pt
    extra: dict[str, Union[str, int, bool]] = Field(default_factory=dict)  # more sbatch options, e.g. { account = "x" }
    folder: str = ""  # submitit's job files; "" = logs/.studies/<study>/submitit

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash((self.partition, self.gpus_per_node, self.cpus_per_task, self.mem_gb, self.timeout_min,
                     tuple(sorted(self.extra.items())), self.folder))


Sampler = Literal["tpe", "random", "grid"]
Pruner = Literal["median", "hyperband", "none"]
Objective = Literal["best_val_mae"]


class SweepDim(BaseModel):
    """One searched key: ``kind`` is one of SWEEP_KINDS; ``values`` the two bounds or the choices."""

    model_config = ConfigDict(frozen=True)
    key: str
    kind: str
    values: tuple[Any, ...]


class SweepCfg(_Table):
    name: Optional[_text(check_name)] = None  # the study's name; default: run.name
    objective: Objective = "best_val_mae"  # minimised; the test MAE is never used to select
    trials: _int(1, 10000) = 20  # finished + pruned trials wanted (a rerun runs only the missing ones)
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"
    prune_above: Optional[_num(gt=0.0)] = None  # also stop a trial whose val_mae at an epoch >= 1 is above this
    seed: _int(0, 2**32 - 1) = 0  # the sampler's seed
    space: dict[str, Any]  # "section.key" = { log_uniform|uniform|int|choice = [...] }

    @property
    def dims(self) -> tuple[SweepDim, ...]:
        """The searched keys in file order (the table was checked by :func:`_check_sweep`)."""
        return tuple(SweepDim(key=k, kind=next(iter(v)), values=tuple(next(iter(v.values())))) for k, v in self.space.items())

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        import json

        return hash((self.name, self.objective, self.trials, self.sampler, self.pruner, self.prune_above, self.seed,
                     json.dumps(self.space, sort_keys=True)))


class EnsembleCfg(_Table):
    """``[ensemble]``: ``tui-ft --preset`` (or ``tui-ft ensemble``) runs the preset ``members`` times,
    member k with ``train.seed`` + k (tui_ft.core.orchestrate.ensemble)."""

    members: _int(2, 64)  # the number of runs; -k of tui-ft ensemble overrides it


class Preset(_Table):
    """A validated preset. ``path`` (the file it came from) and ``lines`` (key -> line)
    are not part of its value: equal presets from two files compare equal."""

    run: RunCfg
    data: DataCfg
    model: ModelCfg = ModelCfg()
    finetune: FinetuneCfg
    optim: OptimCfg  # may be left out: optim.lr then follows finetune.mode (DEFAULT_LR)
    train: TrainCfg = TrainCfg()
    cluster: ClusterCfg = ClusterCfg()  # only read by the slurm executor; not part of what is trained
    sweep: Optional[SweepCfg] = None  # a search over this preset; not part of what one run trains
    ensemble: Optional[EnsembleCfg] = None  # K runs of this preset, seeds apart; not part of what one run trains
    log: LogCfg = LogCfg()
    task: TaskCfg = TaskCfg()  # what is trained: a property (default) or a potential
    _path: Optional[str] = PrivateAttr(default=None)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _refit_default(cls, d: Any) -> Any:
        """``finetune.refit_atomref`` defaults to true from pretrained weights, false from a checkpoint."""
        if isinstance(d, dict) and isinstance(d.get("finetune"), dict) and "refit_atomref" not in d["finetune"]:
            model = d.get("model", {})
            init = model.get("init", "") if isinstance(model, dict) else ""
            if isinstance(init, str):
                d = {**d, "finetune": {**d["finetune"], "refit_atomref": init == ""}}
        return d

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_mode(cls, d: Any) -> Any:
        """``[optim]`` may be left out, and ``optim.lr`` defaults to ``DEFAULT_LR`` of
        ``finetune.mode`` (a mode that is missing or wrong is reported, not a missing lr)."""
        if not isinstance(d, dict) or not isinstance(d.get("optim", {}), dict) or "lr" in d.get("optim", {}):
            return d
        ft = d.get("finetune")
        mode = ft.get("mode") if isinstance(ft, dict) else None
        lr = DEFAULT_LR.get(mode, DEFAULT_LR["head"]) if isinstance(mode, str) else DEFAULT_LR["head"]
        return {**d, "optim": {**d.get("optim", {}), "lr": lr}}

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def lines(self) -> dict[str, int]:
        return self._lines

    @property
    def name(self) -> str:
        return self.run.name

    def _key(self) -> tuple:
        return (self.run, self.data, self.model, self.finetune, self.optim, self.train, self.sweep, self.ensemble,
                self.log)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preset):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def located(self, path: str | None, lines: dict[str, int]) -> "Preset":
        """The same preset, said to come from ``path`` with the key -> line map ``lines``."""
        new = self.model_copy()
        new._path = path
        new._lines = dict(lines)
        return new

    def to_dict(self) -> dict[str, Any]:
        """All resolved values as nested plain dicts (JSON and TOML serialisable).

        ``finetune.backbone_lr`` is left out when unset, and ``model.pretrained``
        when ``model.init`` is set (the checkpoint fixes the model then, and a
        preset may not name both), so ``preset_from_dict(p.to_dict()) == p``.
        """
        d = {sec: getattr(self, sec).model_dump() for sec in SECTIONS}
        if self.model.init:
            del d["model"]["pretrained"]
        if self.finetune.backbone_lr is None:
            del d["finetune"]["backbone_lr"]
        # fields added later are written only when set, so older presets keep their text and hash
        for sec, defaults in (("data", _DATA_DEFAULTS), *_RECIPE_DEFAULTS.items()):
            for key, default in defaults.items():
                if key in d[sec] and d[sec][key] == default:
                    del d[sec][key]
        if self.log == LogCfg():
            del d["log"]
        if self.task == TaskCfg():
            del d["task"]
        else:
            d["task"] = self.task.model_dump(exclude_none=True)
        if self.cluster != ClusterCfg():
            d["cluster"] = self.cluster.model_dump()
        if self.sweep is not None:
            d["sweep"] = self.sweep.model_dump(exclude_none=True)
        if self.ensemble is not None:
            d["ensemble"] = self.ensemble.model_dump()
        return d

    def line_of(self, field: str) -> int | None:
        """Line of ``field`` ("data.target") in the source file: the key's line,
        else its table's header line, else ``None``."""
        return line_of(self._lines, field)

    def error(self, field: str, message: str) -> PresetError:
        return PresetError(self._path or "<preset>", self.line_of(field), field, message)

    def with_changes(self, changes: dict[str, object]) -> "Preset":
        """A new validated preset with ``{"section.key": value}`` changes applied.

        ``None`` (or ``""`` for a number) removes a key so its default applies.
        Strings given for number or boolean fields are converted when they
        parse ("1e-4", "8", "true"; pydantic's lax mode), so form inputs can be
        passed as they are. Changing ``model.init`` drops ``model.pretrained``
        (unless it is changed too) and lets ``finetune.refit_atomref`` follow
        its default again if it was at the default before. Raises
        :class:`PresetErrors` (file ``"<form>"``, the field names as given)
        when a value is invalid.
        """
        d = self.to_dict()
        errors: list[PresetError] = []
        old_init = self.model.init
        for key, value in changes.items():
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) not in (2, 3) or not all(parts):
                errors.append(PresetError("<form>", None, str(key), "expected a field name like optim.lr"))
                continue
            table = d.setdefault(parts[0], {})
            if len(parts) == 3:
                sub = table.setdefault(parts[1], {})
                if not isinstance(sub, dict):
                    errors.append(PresetError("<form>", None, key, "not a table"))
                    continue
                table, name = sub, parts[2]
            else:
                name = parts[1]
            value = coerce_form_value(".".join(parts[:2]), value)
            if value is None:
                table.pop(name, None)
            else:
                table[name] = value
        if errors:
            raise PresetErrors(errors)
        if "model.init" in changes:
            new_init = d.get("model", {}).get("init") or ""
            if new_init != old_init:
                if new_init and "model.pretrained" not in changes:
                    d["model"].pop("pretrained", None)
                if "finetune.refit_atomref" not in changes and self.finetune.refit_atomref == (old_init == ""):
                    d["finetune"].pop("refit_atomref", None)
        try:
            return _build(d, "<form>", {})
        except PresetErrors:
            raise
        except PresetError as e:
            raise PresetErrors([e]) from None


NOT_TRAINED = ("sweep", "cluster", "ensemble")  # optional tables that say how to run a preset, not what one run trains
_DATA_DEFAULTS: dict[str, Any] = {"format": "auto", "per_atom": False, "split": "matbench", "test_fraction": 0.2,
                                  "test_source": "", "unit": None, "skip_bad_rows": False}
# issue 27's recipe fields (tui_ft.core.train.recipe), left out of to_dict at their defaults too
_RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "optim": {"warmup_epochs": 0, "clip_grad_norm": 0.0},
    "train": {"ema": 0.0, "swa_start": 0, "swa_lr": None},
}

SECTION_MODELS: dict[str, type[_Table]] = {
    name: info.annotation for name, info in Preset.model_fields.items() if name not in NOT_TRAINED  # type: ignore[misc]
}
SECTIONS: dict[str, tuple[str, ...]] = {sec: tuple(m.model_fields) for sec, m in SECTION_MODELS.items()}
OPTIONAL_SECTIONS = tuple(sec for sec, info in Preset.model_fields.items() if not info.is_required())


# --------------------------------------------------------------------------- cross-field rules


def _cross_field(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules between fields, as (field, message), on the raw tables (checked after the types)."""
    def table(sec: str) -> dict[str, Any]:
        t = d.get(sec)
        return t if isinstance(t, dict) else {}

    data, model, ft = table("data"), table("model"), table("finetune")
    out: list[tuple[str, str]] = []
    if isinstance(d.get("ensemble"), dict) and isinstance(d.get("sweep"), dict):
        out.append(("ensemble", "a preset has either a [sweep] (a search) or an [ensemble] (K runs of one setting); "
                                "search first, then make an ensemble of the best trial's preset (tui-ft sweep NAME --best)"))
    init = model.get("init")
    if isinstance(init, str) and init and "pretrained" in model:
        out.append(("model.init", "cannot be combined with model.pretrained (the checkpoint already fixes the model); "
                                  "remove one of them"))
    # head mode trains only the readout head: the backbone options make no sense there
    if ft.get("mode") == "head":
        full_only = 'only allowed when finetune.mode = "full"'
        if ft.get("backbone_lr") is not None:
            out.append(("finetune.backbone_lr", full_only))
        if ft.get("lr_factors"):
            out.append(("finetune.lr_factors", full_only))
        unfreeze = ft.get("unfreeze_every")
        if _whole(unfreeze) and unfreeze > 0:
            out.append(("finetune.unfreeze_every", full_only))
    out.extend(_recipe_rules(table("optim"), table("train")))
    task = table("task")
    if task.get("kind") == "potential":
        train = table("train")
        if train.get("precision", "fp32") != "fp32":
            out.append(("train.precision", 'a potential trains in fp32 (forces are second derivatives; autocast is not '
                                           f'supported for them yet), got {show_value(train.get("precision"))}'))
        if data.get("source") == DEMO_SOURCE:
            out.append(("data.source", 'the demo data has no forces; the potential demo is "demo_potential"'))
    elif task:
        extra = sorted(k for k in task if k != "kind")
        if extra:
            out.append((f"task.{extra[0]}", 'only allowed when task.kind = "potential"'))
    if data.get("source") == DEMO_POTENTIAL_SOURCE and task.get("kind") != "potential":
        out.append(("data.source", 'the potential demo has energies and forces, not a property: set task.kind = "potential"'))
    target = data.get("target", DEMO_TARGET)
    if data.get("source") == DEMO_SOURCE and isinstance(target, str) and target != DEMO_TARGET:
        out.append(("data.target", f'the demo data has only the target "{DEMO_TARGET}", got {show_value(target)}'))
    return out


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _recipe_rules(optim: dict[str, Any], train: dict[str, Any]) -> list[tuple[str, str]]:
    """Warm-up and SWA must fall inside the run's epochs (their types are checked already)."""
    out: list[tuple[str, str]] = []
    epochs = train.get("epochs", TrainCfg.model_fields["epochs"].default)
    if not _whole(epochs) or not 1 <= epochs <= 10000:  # a bad train.epochs has its own error
        return out
    warm, start = optim.get("warmup_epochs", 0), train.get("swa_start", 0)
    if _whole(warm) and 0 < warm and warm >= epochs:
        out.append(("optim.warmup_epochs", f"must be less than train.epochs ({epochs}), got {warm}"))
    if _whole(start) and start > epochs:
        out.append(("train.swa_start", f"must be at most train.epochs ({epochs}), got {start}"))
    if _whole(start) and _whole(warm) and 0 < start <= warm:
        out.append(("train.swa_start", f"must come after the warm-up (optim.warmup_epochs = {warm}), got {start}"))
    if train.get("swa_lr") is not None and not (_whole(start) and start > 0):
        out.append(("train.swa_lr", "only allowed with train.swa_start > 0 (SWA on)"))
    return out


# --------------------------------------------------------------------------- pydantic errors in TOML words


@functools.lru_cache(maxsize=None)
def _adapter(field: str) -> TypeAdapter | None:
    sec, _, key = field.partition(".")
    model = SECTION_MODELS.get(sec)
    info = model.model_fields.get(key) if model is not None else None
    if info is None:
        return None
    tp = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(tp, config=ConfigDict(strict=True))


def check_field(field: str, value: Any) -> Any:
    """Validate one ``"section.key"`` value as a preset file would give it (strict).

    Returns the value; raises ``KeyError`` for an unknown field and ``ValueError``
    with the TOML-worded message for a bad value.
    """
    adapter = _adapter(field)
    if adapter is None:
        raise KeyError(field)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        err = {**err, "loc": (*field.split("."), *err["loc"])}
        raise ValueError(_message(err, Preset)[1]) from None


def coerce_form_value(field: str, value: Any) -> Any:
    """A string typed into a form, as the field's type when it parses (pydantic's lax mode).

    ``""`` for a number or flag means "unset" (``None``). Anything that does not
    parse is returned unchanged, so the strict check reports it in TOML words.
    """
    found = _field_type(tuple(field.split(".")), Preset) if field.count(".") == 1 else None
    if found is None or not isinstance(value, str) or found[0] not in _LAX:
        return value
    s = value.strip()
    if s == "":
        return None
    try:  # the type only: the range is checked by the strict schema, which names the value
        return _LAX[found[0]].validate_python(s, strict=False)
    except ValidationError:
        return value


_LAX = {tp: TypeAdapter(tp) for tp in (int, float, bool)}
_coerce_form_value = coerce_form_value  # the name tui_ft.tui.form knew


def _build(d: Any, path: str, lines: dict[str, int]) -> Preset:
    """Validate a parsed TOML document (nested dicts) and build a :class:`Preset`."""
    if not isinstance(d, dict):
        raise PresetError(path, None, "preset", f"expected a table of sections, got {show_value(d)}")
    if isinstance(d.get("stage"), list):
        raise PresetError(
            path,
            line_of(lines, "stage"),
            "stage",
            "this is a plan (it has top-level [[stage]] tables), not a preset: load it with the plan loader",
        )
    errors: list[PresetError] = []
    preset: Preset | None = None
    try:
        preset = Preset.model_validate(d)
    except ValidationError as exc:
        errors = _errors(exc, path, lines, root=Preset)
    bad = {e.field for e in errors}
    for field, message in _cross_field(d):
        if field not in bad and not any(field.startswith(b + ".") for b in bad):
            errors.append(PresetError(path, line_of(lines, field), field, message))
    if not any(e.field == "sweep" or e.field.startswith("sweep.") for e in errors):
        for field, message in _check_sweep(d, root=Preset, sections=SECTIONS, check_field=check_field,
                                           cross_field=_cross_field):
            errors.append(PresetError(path, line_of(lines, field), _space_field(field), message))
    if errors or preset is None:
        errors.sort(key=lambda e: -1 if e.line is None else e.line)
        if len(errors) == 1:
            raise errors[0]
        raise PresetErrors(errors)
    return preset.located(None if path == "<form>" else path, lines)


# --------------------------------------------------------------------------- parsing


def parse_preset(text: str, path: str = "<string>") -> Preset:
    """Parse and validate preset TOML text. Raises PresetError / PresetErrors."""
    path = os.fspath(path)
    try:
        data, lines = parse_toml(text, path)
    except TomlFileError as exc:
        raise PresetError.from_toml(exc) from None
    return _build(data, path, lines)


def load_preset(path: str | os.PathLike[str], *, regular_only: bool = False) -> Preset:
    """Read and validate a preset file. The error file name is ``path`` as given. ``regular_only``:
    a file tui-ft wrote (``logs/RUN/preset.toml``), read only if it is a regular file
    (:func:`tui_ft.core.config.tomlfile.read_text`)."""
    name = os.fspath(path)
    try:
        text = read_text(name, "preset", regular_only=regular_only)
    except TomlFileError as exc:
        raise PresetError.from_toml(exc) from None
    return parse_preset(text, name)


def preset_from_dict(d: dict, path: str = "<dict>", lines: dict[str, int] | None = None) -> Preset:
    """Validate nested dicts (as ``tomllib`` would give) and build a Preset."""
    return _build(d, path, dict(lines or {}))


def is_plan_text(text: str) -> bool:
    """True if the TOML text has a top-level ``[[stage]]`` array (a plan, not a preset)."""
    try:
        data, _ = parse_toml(text)
    except TomlFileError:
        return re.search(r"^[ \t]*\[\[[ \t]*stage[ \t]*\]\]", text, re.MULTILINE) is not None
    stage = data.get("stage")
    return isinstance(stage, list) and all(isinstance(s, dict) for s in stage)


# --------------------------------------------------------------------------- writing


# --------------------------------------------------------------------------- resources


