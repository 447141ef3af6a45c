"""Tests for tui_ft.core.config.presets: schema, loader, line numbers, writer, resources."""

from __future__ import annotations

import gzip
import json
import math
import pickle
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tui_ft.core.config.presets import DataCfg, FinetuneCfg, ModelCfg, OptimCfg, Preset, RunCfg, TrainCfg, is_plan_text, load_preset, locate_lines, parse_preset, preset_from_dict
from tui_ft.core.config.fields import PresetError, PresetErrors
from tui_ft.core.config.dump import check_resources, dump_preset, save_preset

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_presets"
DEV_DATA = "../shared/data/mp_e_form_dev.json.gz"
EXPECTED = tomllib.loads((BAD / "expected.toml").read_text(encoding="utf-8"))
SHIPPED = sorted(  # plan files (top-level [[stage]]) are tested in test_plans.py
    p.name for p in (ROOT / "presets").glob("*.toml") if not is_plan_text(p.read_text(encoding="utf-8"))
)

MINIMAL = """\
[run]
name = "t"

[data]
source = "demo"

[finetune]
mode = "head"

[optim]
lr = 1e-3

[train]
epochs = 2
"""


@pytest.fixture(autouse=True)
def _at_root(monkeypatch, tmp_path):
    """Relative paths in presets are resolved against the project root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path / "home"))
    # relative data paths are the project root's: ../shared beside the home is the repository's
    if (ROOT.parent / "shared").is_dir():
        (tmp_path / "home").mkdir(exist_ok=True)
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")


def read_columns(path) -> list[str]:
    """A tiny Matbench-layout reader: the column names, or ValueError when empty."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict) or "columns" not in doc or "data" not in doc:
        raise ValueError("not a Matbench-layout file (expected index/columns/data)")
    if not doc["data"]:
        raise ValueError("empty dataset")
    return list(doc["columns"])


def no_runs(ref: str):
    raise LookupError(f"checkpoint reference {ref!r}: no run or preset named {ref.split('@')[0]!r}")


# --------------------------------------------------------------------------- shipped presets


def test_shipped_preset_set():
    assert set(SHIPPED) >= {
        "head_finetune_freeze.toml",
        "full_finetune.toml",
        "run1.toml",
        "run2.toml",
        "run3.toml",
        "demo.toml",
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_presets_load(name):
    p = load_preset(f"presets/{name}")
    assert p.path == f"presets/{name}"
    assert p.name == name.removesuffix(".toml")
    assert p.run.description.strip(), "every shipped preset has a description"
    assert p.line_of("run.name") is not None
    assert p.line_of("optim.lr") is not None


def _dev(p: Preset):
    assert p.data.source == DEV_DATA
    assert p.data.target == "e_form"
    assert p.data.fold == 0
    assert p.data.fraction == 0.1


def test_head_finetune_freeze_values():
    p = load_preset("presets/head_finetune_freeze.toml")
    _dev(p)
    assert p.finetune.mode == "head"
    assert p.finetune.refit_atomref is True
    assert p.optim.lr == 1e-3
    assert p.train.epochs == 3
    assert p.train.batch_size == 8
    assert p.model == ModelCfg(pretrained="0.3.0", init="")


def test_full_finetune_values():
    p = load_preset("presets/full_finetune.toml")
    _dev(p)
    assert p.finetune.mode == "full"
    assert p.finetune.refit_atomref is True
    assert p.optim.lr == 1e-4
    assert p.train.epochs == 3
    assert p.train.batch_size == 8


def test_run1_values():
    p = load_preset("presets/run1.toml")
    _dev(p)
    assert p.finetune.mode == "head"
    assert p.optim.lr == 1e-3
    assert p.train.epochs == 10
    assert p.train.patience == 3
    assert p.train.batch_size == 8


def test_run2_values():
    p = load_preset("presets/run2.toml")
    _dev(p)
    assert p.finetune.mode == "full"
    assert p.model.init == "run1@best"
    assert p.finetune.refit_atomref is False
    assert p.optim.lr == 1e-5
    assert p.train.epochs == 5
    assert p.train.batch_size == 8


def test_run3_values():
    p = load_preset("presets/run3.toml")
    _dev(p)
    assert p.finetune.mode == "head"
    assert p.optim.lr == 1e-3
    assert p.optim.scheduler == "cosine"
    assert p.train.epochs == 15


def test_demo_values():
    p = load_preset("presets/demo.toml")
    assert p.data == DataCfg(source="demo", target="e_form", fold=0, fraction=1.0)
    assert p.finetune.mode == "head"
    assert p.optim.lr == 1e-3
    assert p.train.epochs == 3
    assert p.train.batch_size == 8
    assert p.train.device == "cpu"
    assert "demo" in p.run.description and "not DFT" in p.run.description
    check_resources(p, read_columns=read_columns, resolve_init=no_runs)  # needs nothing


def test_defaults_filled():
    p = parse_preset(MINIMAL)
    assert p.run == RunCfg(name="t", description="")
    assert p.data == DataCfg(source="demo", target="e_form", fold=0, fraction=1.0, val_fraction=0.1, seed=0, test_limit=0)
    assert p.model == ModelCfg(pretrained="0.3.0", init="")
    assert p.finetune == FinetuneCfg(mode="head", refit_atomref=True, backbone_lr=None, lr_factors={}, unfreeze_every=0)
    assert p.optim == OptimCfg(lr=1e-3, optimizer="adam", weight_decay=0.0, scheduler="none")
    assert p.train == TrainCfg(epochs=2, batch_size=16, patience=0, device="auto", seed=0, loss="mse")
    assert p.path == "<string>"


# --------------------------------------------------------------------------- bad preset corpus


def test_corpus_is_complete():
    files = {p.stem for p in BAD.glob("*.toml")} - {"expected"}
    assert len(files) >= 34
    assert files == set(EXPECTED), "every corpus file needs an entry in expected.toml and vice versa"
    readme = (BAD / "README.md").read_text(encoding="utf-8")
    for stem, exp in EXPECTED.items():
        assert f"`{stem}.toml` | `{exp['field']}`" in readme


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bad_preset(stem):
    exp = EXPECTED[stem]
    if "needs" in exp and not (ROOT / exp["needs"]).is_file():
        pytest.skip(f"{exp['needs']} is not available")
    file = f"tests/bad_presets/{stem}.toml"
    with pytest.raises(PresetError) as info:
        preset = load_preset(file)
        assert exp["stage"] == "resources", f"{file} loaded but should fail to parse"
        check_resources(preset, read_columns=read_columns, resolve_init=no_runs)
    err = info.value
    assert len(err.errors) == 1, f"one fault, one error; got:\n{err}"
    assert not isinstance(err, PresetErrors)
    assert err.file == file
    assert err.field == exp["field"]
    assert err.line == exp.get("line")
    prefix = f"{file}:{exp['line']}: {exp['field']}:" if "line" in exp else f"{file}: {exp['field']}:"
    assert str(err).startswith(prefix), str(err)
    assert err.message and "\n" not in str(err)
    assert all(ch.isprintable() for ch in str(err)), "control characters must be escaped in messages"


def test_resource_cases_parse_cleanly():
    for stem, exp in EXPECTED.items():
        if exp["stage"] == "resources":
            load_preset(f"tests/bad_presets/{stem}.toml")  # no error before check_resources


def test_messages_say_what_was_expected():
    def msg(stem):
        with pytest.raises(PresetError) as info:
            load_preset(f"tests/bad_presets/{stem}.toml")
        return str(info.value)

    assert msg("fold_7").endswith("data.fold: expected an integer from 0 to 4, got 7")
    assert msg("lr_string").endswith('optim.lr: expected a number in (0, 1], got "fast"')
    assert msg("extra_key").endswith(
        "unknown key (allowed: optimizer, lr, weight_decay, scheduler, warmup_epochs, clip_grad_norm)")
    assert msg("missing_mode").endswith("finetune.mode: missing required key")
    assert msg("missing_run").endswith("run: missing required section")
    assert msg("batch_bool").endswith("got true")
    assert msg("name_control_char").endswith('got "bad\\u0007name"')
    assert "plan loader" in msg("plan_file")
    not_toml = msg("not_toml")
    assert "(at line" not in not_toml and "Expected '='" in not_toml


def test_empty_dataset_file_is_as_documented():
    doc = json.loads((ROOT / "tests" / "data" / "empty.json").read_text())
    assert doc == {"index": [], "columns": ["structure", "e_form"], "data": []}


# --------------------------------------------------------------------------- types and cross-field rules


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_bool_is_not_a_number():
    for old, new in [("lr = 1e-3", "lr = true"), ("epochs = 2", "epochs = false")]:
        with pytest.raises(PresetError) as info:
            parse_preset(_edit(MINIMAL, old, new))
        assert info.value.field in ("optim.lr", "train.epochs")


def test_ints_accepted_for_floats():
    p = parse_preset(_edit(MINIMAL, 'source = "demo"', 'source = "demo"\nfraction = 1'))
    assert p.data.fraction == 1.0 and isinstance(p.data.fraction, float)
    p = parse_preset(_edit(MINIMAL, "lr = 1e-3", "lr = 1"))
    assert p.optim.lr == 1.0 and isinstance(p.optim.lr, float)


def test_floats_not_accepted_for_ints():
    with pytest.raises(PresetError) as info:
        parse_preset(_edit(MINIMAL, "epochs = 2", "epochs = 2.0"))
    assert info.value.field == "train.epochs"


def test_inf_rejected():
    with pytest.raises(PresetError) as info:
        parse_preset(_edit(MINIMAL, "lr = 1e-3", "lr = 1e-3\nweight_decay = inf"))
    assert info.value.field == "optim.weight_decay"


def test_several_errors_at_once():
    text = _edit(_edit(MINIMAL, "lr = 1e-3", 'lr = "x"'), "epochs = 2", "epochs = 0\nbogus = 1")
    with pytest.raises(PresetErrors) as info:
        parse_preset(text, "p.toml")
    err = info.value
    assert isinstance(err, PresetError)  # `except PresetError` catches both kinds
    assert [e.field for e in err.errors] == ["optim.lr", "train.epochs", "train.bogus"]
    lines = str(err).splitlines()
    assert lines == [str(e) for e in err.errors]
    assert lines[0].startswith("p.toml:11: optim.lr:")
    assert lines[1].startswith("p.toml:14: train.epochs:")
    assert lines[2].startswith("p.toml:15: train.bogus: unknown key")


def test_missing_sections():
    with pytest.raises(PresetErrors) as info:
        parse_preset('[run]\nname = "x"\n', "p.toml")
    assert [e.field for e in info.value.errors] == ["data", "finetune"]  # [optim] and [train] have defaults
    assert all(e.line is None for e in info.value.errors)
    assert str(info.value.errors[0]) == "p.toml: data: missing required section"


@pytest.mark.parametrize("mode", ["head", "full"])
def test_optim_and_train_may_be_left_out(mode):
    """Issue 22 item 7: a minimal own-data preset needs run.name, data.source and finetune.mode;
    optim.lr follows the mode (the shipped presets' values), train.epochs is 10."""
    from tui_ft.core.config.presets import DEFAULT_LR

    text = f'[run]\nname = "x"\n[data]\nsource = "demo"\n[finetune]\nmode = "{mode}"\n'
    p = parse_preset(text, "p.toml")
    assert p.optim == OptimCfg(lr=DEFAULT_LR[mode]) and p.optim.lr == {"head": 1e-3, "full": 1e-4}[mode]
    assert p.train == TrainCfg() and p.train.epochs == 10
    # a partial [optim] / [train] gets the same defaults; given values win
    p = parse_preset(text + '[optim]\noptimizer = "adamw"\n[train]\nbatch_size = 4\n', "p.toml")
    assert (p.optim.optimizer, p.optim.lr, p.train.batch_size, p.train.epochs) == ("adamw", DEFAULT_LR[mode], 4, 10)
    p = parse_preset(text + "[optim]\nlr = 3e-4\n[train]\nepochs = 2\n", "p.toml")
    assert (p.optim.lr, p.train.epochs) == (3e-4, 2)
    # the resolved values are written out: the preset reads back the same, whatever the defaults become
    assert parse_preset(dump_preset(p)) == p and parse_preset(dump_preset(parse_preset(text))) == parse_preset(text)
    assert parse_preset(text).to_dict()["optim"]["lr"] == DEFAULT_LR[mode]


def test_shipped_presets_do_not_use_the_new_defaults():
    """The defaults of item 7 change no shipped preset: each names optim.lr and train.epochs."""
    for f in sorted((ROOT / "presets").glob("*.toml")):
        raw = tomllib.loads(f.read_text(encoding="utf-8"))
        if "stage" in raw:  # a plan: its stages name presets
            continue
        assert "lr" in raw.get("optim", {}) and "epochs" in raw.get("train", {}), f.name


def test_full_mode_options():
    text = _edit(MINIMAL, 'mode = "head"', 'mode = "full"\nbackbone_lr = 1e-5\nunfreeze_every = 2\n'
                 "lr_factors = { embedding = 0.1, interaction = 0.5, readout = 1 }")
    p = parse_preset(text)
    assert p.finetune.backbone_lr == 1e-5
    assert p.finetune.unfreeze_every == 2
    assert p.finetune.lr_factors == {"embedding": 0.1, "interaction": 0.5, "readout": 1.0}
    assert p.line_of("finetune.lr_factors.readout") == p.line_of("finetune.lr_factors") == 11
    assert parse_preset(dump_preset(p)) == p
    assert "backbone_lr" not in parse_preset(MINIMAL).to_dict()["finetune"]


def test_lr_factors_subtable():
    text = _edit(MINIMAL, 'mode = "head"', 'mode = "full"\n\n[finetune.lr_factors]\nembedding = 0.2\nbogus = 1')
    with pytest.raises(PresetError) as info:
        parse_preset(text, "p.toml")
    assert str(info.value).startswith("p.toml:12: finetune.lr_factors.bogus: unknown group")


def test_refit_atomref_default_depends_on_init():
    assert parse_preset(MINIMAL).finetune.refit_atomref is True
    with_init = _edit(MINIMAL, "[finetune]", '[model]\ninit = "run1@best"\n\n[finetune]')
    assert parse_preset(with_init).finetune.refit_atomref is False
    assert parse_preset(_edit(with_init, 'mode = "head"', 'mode = "head"\nrefit_atomref = true')).finetune.refit_atomref
    no_refit = _edit(MINIMAL, 'mode = "head"', 'mode = "head"\nrefit_atomref = false')
    assert parse_preset(no_refit).finetune.refit_atomref is False
    pt = _edit(MINIMAL, "[finetune]", '[model]\ninit = "checkpoints/x/best.pt"\n\n[finetune]')
    assert parse_preset(pt).finetune.refit_atomref is False


def test_pretrained_alone_is_fine():
    p = parse_preset(_edit(MINIMAL, "[finetune]", '[model]\npretrained = "r2scan"\ninit = ""\n\n[finetune]'))
    assert p.model == ModelCfg(pretrained="r2scan", init="")
    assert parse_preset(dump_preset(p)) == p


# --------------------------------------------------------------------------- line locator


def test_line_locator():
    text = """\
# comment = not a key
optim.lr = 1e-3
optim."weight_decay" = 0.0

[run]  # header comment
name = "x"
description = '''
fold = 99
[not_a_table]
'''

[data]
source = "demo"   # source = "elsewhere"
"target" = "e_form"

[ finetune ]
mode = "full"
lr_factors = { embedding = 0.1, readout = 2 }

[train]
epochs = 2
"""
    lines = locate_lines(text)
    assert lines["optim"] == 2
    assert lines["optim.lr"] == 2
    assert lines["optim.weight_decay"] == 3
    assert lines["run"] == 5
    assert lines["run.name"] == 6
    assert lines["run.description"] == 7
    assert "run.fold" not in lines and "not_a_table" not in lines
    assert lines["data.source"] == 13
    assert lines["data.target"] == 14
    assert lines["finetune"] == 16
    assert lines["finetune.lr_factors.embedding"] == 18
    assert lines["finetune.lr_factors.readout"] == 18
    assert lines["train.epochs"] == 21
    p = parse_preset(text, "x.toml")
    assert p.line_of("data.fold") == 12  # absent key: its table's header
    assert p.line_of("model.init") is None  # absent table
    assert p.error("data.fold", "boom").__str__() == "x.toml:12: data.fold: boom"
    assert str(p.error("model.init", "boom")) == "x.toml: model.init: boom"


def test_inline_section_tables():
    text = 'run = { name = "x" }\ndata = { source = "demo", fold = 9 }\n' \
           'finetune = { mode = "head" }\noptim = { lr = 1e-3 }\ntrain = { epochs = 1 }\n'
    with pytest.raises(PresetError) as info:
        parse_preset(text, "i.toml")
    assert str(info.value).startswith("i.toml:2: data.fold:")


def test_toml_syntax_error_line():
    with pytest.raises(PresetError) as info:
        parse_preset(MINIMAL + "epochs = [1,\n", "s.toml")
    assert info.value.field == "toml"
    assert info.value.line == MINIMAL.count("\n") + 1
    assert "(at " not in info.value.message


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_shipped(name):
    p = load_preset(f"presets/{name}")
    text = dump_preset(p)
    q = parse_preset(text)
    assert q == p
    assert q.to_dict() == p.to_dict()
    assert preset_from_dict(p.to_dict()) == p
    assert json.loads(json.dumps(p.to_dict())) == p.to_dict()


def test_round_trip_variants():
    base = load_preset("presets/head_finetune_freeze.toml")
    variants = [
        {"optim.lr": 1e-05},
        {"optim.lr": 0.1 + 0.2, "optim.weight_decay": 1e-300, "optim.optimizer": "adamw"},
        {"run.description": 'quotes " and \\ backslash \\n not a newline, real\nnewline\ttab, ünïcødé ✓ 🧪, bell \u0007, del \x7f'},
        {"run.description": "'''\"\"\"#[x]"},
        {"finetune.mode": "full", "finetune.backbone_lr": 3e-6, "finetune.unfreeze_every": 2,
         "finetune.lr_factors": {"readout": 1, "embedding": 0.05}},
        {"model.init": "run1@best", "finetune.mode": "full"},
        {"model.pretrained": "r2scan", "train.loss": "huber", "train.device": "cuda", "data.test_limit": 100},
        {"data.source": "some dir/with 'quotes'/d.json.gz", "data.target": "band gap (eV)"},
    ]
    for changes in variants:
        p = base.with_changes(changes)
        assert p.path is None
        text = dump_preset(p)
        q = parse_preset(text)
        assert q == p, changes
        assert q.to_dict() == p.to_dict()
    p = base.with_changes(variants[0])
    assert "lr = 1e-05" in dump_preset(p)


def test_save_and_load(tmp_path):
    p = load_preset("presets/run2.toml").with_changes({"run.name": "saved", "run.description": "é \"q\""})
    target = tmp_path / "sub" / "saved.toml"
    save_preset(p, target)
    q = load_preset(target)
    assert q == p
    assert q.path == str(target)
    assert q.line_of("optim.lr") is not None
    assert [x.name for x in target.parent.iterdir()] == ["saved.toml"]  # no temp file left


# --------------------------------------------------------------------------- with_changes


def test_with_changes_applies():
    base = load_preset("presets/head_finetune_freeze.toml")
    p = base.with_changes({"optim.lr": 1e-4, "finetune.mode": "full", "run.name": "x"})
    assert (p.optim.lr, p.finetune.mode, p.name) == (1e-4, "full", "x")
    assert base.optim.lr == 1e-3  # the original is untouched
    assert p.data == base.data


def test_with_changes_coerces_form_strings():
    base = load_preset("presets/head_finetune_freeze.toml")
    p = base.with_changes({"optim.lr": "1e-4", "train.epochs": " 12 ", "finetune.refit_atomref": "false"})
    assert p.optim.lr == 1e-4 and p.train.epochs == 12 and p.finetune.refit_atomref is False
    full = base.with_changes({"finetune.mode": "full", "finetune.backbone_lr": "1e-6"})
    assert full.finetune.backbone_lr == 1e-6
    assert full.with_changes({"finetune.backbone_lr": ""}).finetune.backbone_lr is None
    assert full.with_changes({"finetune.backbone_lr": None}).finetune.backbone_lr is None


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"optim.lr": "fast"}, "optim.lr"),
        ({"optim.lr": 0}, "optim.lr"),
        ({"optim.lr": True}, "optim.lr"),
        ({"data.fold": 9}, "data.fold"),
        ({"data.fraction": 1.5}, "data.fraction"),
        ({"train.epochs": 2.5}, "train.epochs"),
        ({"train.batch_size": "lots"}, "train.batch_size"),
        ({"run.name": "a/b"}, "run.name"),
        ({"run.name": ""}, "run.name"),
        ({"finetune.mode": "both"}, "finetune.mode"),
        ({"finetune.backbone_lr": 1e-5}, "finetune.backbone_lr"),
        ({"model.init": "nonsense"}, "model.init"),
        ({"model.init": "run1@best", "model.pretrained": "0.2.0"}, "model.init"),
        ({"optim.momentum": 0.9}, "optim.momentum"),
        ({"train.device": "tpu"}, "train.device"),
        ({"nosection.key": 1}, "nosection"),
        ({"lr": 1e-3}, "lr"),
    ],
)
def test_with_changes_rejects(changes, field):
    base = load_preset("presets/head_finetune_freeze.toml")
    with pytest.raises(PresetErrors) as info:
        base.with_changes(changes)
    err = info.value
    assert [e.field for e in err.errors] == [field]
    assert err.errors[0].file == "<form>"
    assert str(err).startswith(f"<form>: {field}:")


def test_with_changes_mode_head_keeps_full_only_options_strict():
    full = load_preset("presets/full_finetune.toml").with_changes({"finetune.backbone_lr": 1e-6})
    with pytest.raises(PresetErrors) as info:
        full.with_changes({"finetune.mode": "head"})
    assert info.value.errors[0].field == "finetune.backbone_lr"
    head = full.with_changes({"finetune.mode": "head", "finetune.backbone_lr": None})
    assert head.finetune.backbone_lr is None


def test_with_changes_init_follows_defaults():
    base = load_preset("presets/head_finetune_freeze.toml")
    assert base.finetune.refit_atomref is True
    p = base.with_changes({"model.init": "run1@best"})
    assert p.model.init == "run1@best"
    assert p.finetune.refit_atomref is False  # was at its default, follows the new default
    assert "pretrained" not in p.to_dict()["model"]
    back = p.with_changes({"model.init": ""})
    assert back.model == ModelCfg(pretrained="0.3.0", init="") and back.finetune.refit_atomref is True
    kept = base.with_changes({"model.init": "run1@best", "finetune.refit_atomref": True})
    assert kept.finetune.refit_atomref is True
    custom = base.with_changes({"finetune.refit_atomref": False}).with_changes({"model.init": "x@last"})
    assert custom.finetune.refit_atomref is False


# --------------------------------------------------------------------------- misc API


def test_error_formats_and_pickle():
    e = PresetError("a.toml", 3, "data.fold", "bad")
    assert str(e) == "a.toml:3: data.fold: bad"
    assert (e.file, e.line, e.field, e.message) == ("a.toml", 3, "data.fold", "bad")
    assert str(PresetError("a.toml", None, "run", "missing")) == "a.toml: run: missing"
    many = PresetErrors([e, PresetError("a.toml", None, "run", "missing")])
    assert str(many) == "a.toml:3: data.fold: bad\na.toml: run: missing"
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
    assert str(pickle.loads(pickle.dumps(many))) == str(many)


def test_load_missing_file():
    with pytest.raises(PresetError) as info:
        load_preset("presets/does_not_exist.toml")
    assert info.value.field == "preset" and info.value.line is None
    assert str(info.value).startswith("presets/does_not_exist.toml: preset: cannot read:")
    with pytest.raises(PresetError) as info:
        load_preset("presets")  # a folder
    assert "cannot read" in str(info.value)


def test_is_plan_text():
    plan = (BAD / "plan_file.toml").read_text()
    assert is_plan_text(plan)
    assert is_plan_text("[[stage]]\npreset = 'x'\n[[stage\n")  # broken TOML, still recognisable
    assert not is_plan_text(MINIMAL)
    assert not is_plan_text("stage = 3\n")


def test_presets_are_hashable_and_frozen():
    p = load_preset("presets/full_finetune.toml")
    assert hash(p) == hash(parse_preset(dump_preset(p)))
    with pytest.raises(AttributeError):
        p.optim.lr = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- check_resources


@pytest.mark.devdata
def test_check_resources_ok_with_dev_data():
    p = load_preset("presets/head_finetune_freeze.toml")
    check_resources(p, read_columns=read_columns)
    check_resources(p)


def test_check_resources_matbench_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    p = parse_preset(_edit(MINIMAL, 'source = "demo"', 'source = "matbench_mp_e_form"'), "m.toml")
    with pytest.raises(PresetError) as info:
        check_resources(p)
    assert str(info.value).startswith("m.toml:5: data.source:")
    assert "run `tui-ft data fetch matbench_mp_e_form` first" in str(info.value)
    f = tmp_path / "data" / "matbench_mp_e_form.json.gz"
    f.parent.mkdir(parents=True)
    with gzip.open(f, "wt") as fh:
        json.dump({"index": [1], "columns": ["structure", "e_form"], "data": [[{}, -1.0]]}, fh)
    check_resources(p, read_columns=read_columns)
    seen = []
    check_resources(p, read_columns=lambda path: seen.append(Path(path)) or ["structure", "e_form"])
    assert seen == [f]


def test_check_resources_target_structure_rejected(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"index": [0], "columns": ["structure", "e_form"], "data": [[{}, 1.0]]}))
    p = parse_preset(_edit(MINIMAL, 'source = "demo"', f'source = "{f}"\ntarget = "structure"'))
    with pytest.raises(PresetError) as info:
        check_resources(p, read_columns=read_columns)
    assert info.value.field == "data.target"


def test_check_resources_resolve_init_called_and_collects():
    p = parse_preset(
        _edit(_edit(MINIMAL, "[finetune]", '[model]\ninit = "ghost@last"\n\n[finetune]'),
              'source = "demo"', 'source = "nowhere.json"'),
        "r.toml",
    )
    calls = []
    with pytest.raises(PresetErrors) as info:
        check_resources(p, resolve_init=lambda ref: calls.append(ref) or no_runs(ref))
    assert calls == ["ghost@last"]
    assert [(e.field, e.line) for e in info.value.errors] == [("data.source", 5), ("model.init", 8)]
    ok = parse_preset(_edit(MINIMAL, "[finetune]", '[model]\ninit = "ghost@last"\n\n[finetune]'))
    check_resources(ok, resolve_init=lambda ref: object())
    check_resources(ok)  # no resolver: references cannot be checked here


def test_check_resources_unreadable_data(tmp_path):
    f = tmp_path / "broken.json.gz"
    f.write_bytes(b"not gzip at all")
    p = parse_preset(_edit(MINIMAL, 'source = "demo"', f'source = "{f}"'))
    with pytest.raises(PresetError) as info:
        check_resources(p, read_columns=read_columns)
    assert info.value.field == "data.source"


def test_nan_never_sneaks_in():
    p = parse_preset(MINIMAL)
    with pytest.raises(PresetErrors):
        p.with_changes({"optim.lr": math.nan})
    with pytest.raises(PresetErrors):
        p.with_changes({"data.fraction": "nan"})


# --------------------------------------------------------------------------- schema on pydantic


def test_cuda_device_index_accepted():
    for device in ("cuda", "cuda:0", "cuda:3"):
        p = parse_preset(_edit(MINIMAL, "epochs = 2", f'epochs = 2\ndevice = "{device}"'))
        assert p.train.device == device
    for device in ("cuda:-1", "cuda:", "cuda:01", "CUDA:0"):
        with pytest.raises(PresetError) as info:
            parse_preset(_edit(MINIMAL, "epochs = 2", f'epochs = 2\ndevice = "{device}"'))
        assert info.value.field == "train.device"


def test_new_bounds():
    ok = parse_preset(_edit(MINIMAL, "epochs = 2", "epochs = 2\nseed = 4294967295"))
    assert ok.train.seed == 2**32 - 1
    assert parse_preset(_edit(MINIMAL, "lr = 1e-3", "lr = 1e-3\nweight_decay = 1")).optim.weight_decay == 1.0
    demo_e_form = parse_preset(_edit(MINIMAL, 'source = "demo"', 'source = "demo"\ntarget = "e_form"'))
    assert demo_e_form.data.target == "e_form"
    other = parse_preset(_edit(MINIMAL, 'source = "demo"', 'source = "d.json"\ntarget = "band_gap"'))
    assert other.data.target == "band_gap"  # other data files are checked by check_resources


@pytest.mark.parametrize("stem", sorted(s for s, e in EXPECTED.items() if e["stage"] == "parse"))
def test_messages_are_in_toml_words(stem):
    with pytest.raises(PresetError) as info:
        load_preset(f"tests/bad_presets/{stem}.toml")
    text = str(info.value)
    for jargon in ("Input should", "type=", "pydantic", "validation error", "[key]", "model_type", "Value error"):
        assert jargon not in text, text


def test_form_values_use_the_lax_schema():
    base = load_preset("presets/head_finetune_freeze.toml")
    p = base.with_changes({"finetune.refit_atomref": "yes", "data.fold": "3", "data.fraction": ".5"})
    assert (p.finetune.refit_atomref, p.data.fold, p.data.fraction) == (True, 3, 0.5)
    with pytest.raises(PresetErrors) as info:
        base.with_changes({"train.epochs": "2.5"})
    assert str(info.value) == '<form>: train.epochs: expected an integer from 1 to 10000, got "2.5"'


def test_sections_are_the_schema():
    """Every field is described once: the models give the sections, the dump and the keys."""
    from tui_ft.core.config.presets import SECTIONS

    p = parse_preset(MINIMAL)
    full = p.with_changes({"finetune.mode": "full", "finetune.backbone_lr": 1e-5, "data.split": "random",
                           "data.format": "idprop", "data.per_atom": True, "data.test_fraction": 0.3,
                           "data.test_source": "t.json", "data.unit": "eV", "data.skip_bad_rows": True,
                           "log.tensorboard": True, "task.kind": "potential", "data.source": "frames.extxyz", "task.energy_weight": 1.0,
                           "task.force_weight": 1.0, "task.stress_weight": 0.1, "task.magmom_weight": 0.0,
                           "task.shear_order": "xy yz zx", "train.epochs": 10, "optim.warmup_epochs": 1, "optim.clip_grad_norm": 10.0,
                           "train.ema": 0.99, "train.swa_start": 8, "train.swa_lr": 1e-4})
    assert {s: tuple(t) for s, t in full.to_dict().items()} == SECTIONS
    # fields added by issue 14 are written only when set: older presets keep their dump and hash
    assert "split" not in p.to_dict()["data"] and "log" not in p.to_dict()
    assert "task" not in p.to_dict()  # a property preset (the default task) keeps its dump and hash
    # and issue 27's recipe fields: a preset without them keeps its dump and hash
    assert not {"warmup_epochs", "clip_grad_norm"} & set(p.to_dict()["optim"])
    assert not {"ema", "swa_start", "swa_lr"} & set(p.to_dict()["train"])
    assert parse_preset(dump_preset(full)) == full


def test_task_shear_order_is_auto_unless_three_shear_names():
    """``task.shear_order`` (mlearn): unset or "auto" is left out of the dump (the preset's hash does not
    change); three distinct shear names are kept as written; anything else is the field's one line."""
    base = parse_preset(MINIMAL).with_changes({"task.kind": "potential", "data.source": "frames.json"})
    assert "shear_order" not in base.to_dict()["task"]
    assert base.with_changes({"task.shear_order": "auto"}) == base
    assert base.with_changes({"task.shear_order": " xy  zx yz "}).task.shear_order == "xy zx yz"
    assert base.with_changes({"task.shear_order": "AUTO"}) == base  # case and commas are forgiven
    assert base.with_changes({"task.shear_order": "XY, ZX, YZ"}).task.shear_order == "xy zx yz"
    for bad in ("xy xy zx", "xx yy zz", "xy yz"):
        with pytest.raises(PresetErrors, match="task.shear_order: expected \"auto\" or the three shear components"):
            base.with_changes({"task.shear_order": bad})
