"""The README's preset reference says what the schema does: the keys it marks
required are those without a default, its smallest preset loads, and its
``[sweep]`` reference is a valid table."""

from __future__ import annotations

import re
from pathlib import Path

from tui_ft.core.config.presets import SECTION_MODELS, Preset, parse_preset

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", README, re.S)


def required_keys() -> set[str]:
    """Every ``section.key`` of the schema that has no default (``optim.lr`` has one by
    ``finetune.mode``, filled in by the loader: ``presets.DEFAULT_LR``)."""
    out = set()
    for sec, model in SECTION_MODELS.items():
        if sec == "sweep":
            continue
        out |= {f"{sec}.{k}" for k, f in model.model_fields.items() if f.is_required()}
    return out - {"optim.lr"}


def test_the_required_keys_are_those_the_readme_marks():
    want = required_keys()
    assert want == {"run.name", "data.source", "finetune.mode"}
    sections = {name for name, f in Preset.model_fields.items() if f.is_required()}
    (reference,) = [b for b in toml_blocks() if "REQUIRED" in b and "[train]" in b]
    marked, sec = set(), None
    for line in reference.splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            sec = m.group(1)
        elif "REQUIRED" in line:
            marked.add(f"{sec}.{line.split('=')[0].strip()}")
    assert marked == want
    sentence = " ".join(README.split())
    assert "Three keys have no default and are **required**: `run.name`, `data.source` and `finetune.mode`" in sentence
    assert all(f"`[{s}]`" in sentence for s in sections)


def test_the_smallest_preset_and_the_sweep_reference_load():
    (smallest,) = [b for b in toml_blocks() if b.startswith('[run]\nname = "mine"')]
    p = parse_preset(smallest, "README.md")
    assert p.name == "mine" and p.sweep is None
    (sweep,) = [b for b in toml_blocks() if b.startswith("[sweep]\n")]
    s = parse_preset(smallest + "\n" + sweep, "README.md").sweep
    assert s is not None and len(s.dims) == len(re.findall(r'^"\w+\.\w+" = ', sweep, re.M))
    assert {d.kind for d in s.dims} == {"log_uniform", "uniform", "int", "choice"}
