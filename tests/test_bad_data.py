"""Bad data files through the real CLI: every case in tests/bad_data/expected.toml.

Each case is a data file made by ``make_<name>`` below from the first 40 rows of
the offline demo data, and a head-mode preset whose ``data.source`` is that file.
``tui-ft --preset P`` must exit with the listed code. Exit 2: exactly one line on
stderr, ``P:LINE: field: message``, naming the data file and the listed text
(the id where a row is at fault), no traceback, nothing on stdout and nothing
written in the project (no logs/, no checkpoints/). Exit 0: the run proceeds
with the listed ids left out of every split, each with its reason.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tui_ft import cli

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_data"
EXPECTED = tomllib.loads((BAD / "expected.toml").read_text(encoding="utf-8"))
N = 40
LINE = re.compile(r"(?P<where>.+?): (?P<field>[A-Za-z_][\w.\[\]]*): (?P<msg>.+)")


@pytest.fixture(scope="module")
def base():
    from tui_ft.core.data.demo import build_demo_dataset

    obj = build_demo_dataset()
    return {"index": [f"demo-{i:03d}" for i in range(N)], "columns": list(obj["columns"]),
            "data": [list(r) for r in obj["data"][:N]]}


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _overlap(sd: dict) -> dict:
    """A second site a few hundredths of an Angstrom from the first (two overlapping atoms)."""
    sd = copy.deepcopy(sd)
    site = copy.deepcopy(sd["sites"][0])
    site["abc"] = [site["abc"][0] + 0.01, site["abc"][1], site["abc"][2]]  # pymatgen reads abc
    site.pop("xyz", None)
    sd["sites"].append(site)
    return sd


def _element(sd: dict, symbol: str) -> dict:
    sd = copy.deepcopy(sd)
    sd["sites"][0]["species"] = [{"element": symbol, "occu": 1}]
    sd["sites"][0]["label"] = symbol
    return sd


def make_z_over_94_all(b):
    b["data"] = [[_element(s, "Og"), y] for s, y in b["data"]]
    return _json(b)


def make_target_1e300_most(b):
    for r in b["data"][4:]:
        r[1] = 1e300
    return _json(b)


def make_target_nan_null_all(b):
    for i, r in enumerate(b["data"]):
        r[1] = None if i % 2 else float("nan")
    return json.dumps(b).encode()  # NaN is written as the bare token NaN (pandas does the same)


def make_index_int(b):
    b["index"] = 5
    return _json(b)


def make_data_not_list(b):
    b["data"] = {"a": 1}
    return _json(b)


def make_row_wrong_length(b):
    b["data"][7] = b["data"][7][:1]
    return _json(b)


def make_row_not_list(b):
    b["data"][3] = {"structure": b["data"][3][0]}
    return _json(b)


def make_missing_target_column(b):
    b["columns"] = ["structure", "band_gap"]
    return _json(b)


def make_structure_not_dict_all(b):
    b["data"] = [["NaCl", y] for _, y in b["data"]]
    return _json(b)


def make_duplicate_ids_all(b):
    b["index"] = [f"demo-{i % 20:03d}" for i in range(N)]
    return _json(b)


def make_fewer_than_5_rows(b):
    b["index"], b["data"] = b["index"][:4], b["data"][:4]
    return _json(b)


def make_fewer_than_5_usable(b):
    for r in b["data"][6:]:
        r[1] = None
    return _json(b)


def make_all_targets_text(b):
    for r in b["data"]:
        r[1] = "n/a"
    return _json(b)


def make_fifo(b):  # noqa: ARG001
    return None  # made by os.mkfifo


def make_empty_file(b):  # noqa: ARG001
    return b""


def make_not_json(b):  # noqa: ARG001
    return b"structure,e_form\nNaCl,-1.0\n"


def make_truncated_gzip(b):
    return gzip.compress(_json(b))[:300]


def make_columns_not_strings(b):
    b["columns"] = ["structure", 7]
    return _json(b)


def make_bad_rows_some(b):
    d = b["data"]
    d[3][0] = _element(d[3][0], "Am")  # Z = 95
    d[5][0] = _overlap(d[5][0])
    d[7][1] = 1e300
    d[9][1] = None
    d[11][0] = "not a structure"
    b["index"][14] = b["index"][13]  # demo-013 twice: both copies left out
    return _json(b)


SUFFIX = {"truncated_gzip": ".json.gz"}


def write_case(name: str, base: dict, folder: Path) -> Path:
    path = folder / f"{name}{SUFFIX.get(name, '.json')}"
    data = globals()[f"make_{name}"](copy.deepcopy(base))
    if data is None:
        os.mkfifo(path)
    else:
        path.write_bytes(data)
    return path


def preset_for(demo_preset_text, project: Path, name: str, source: Path, *, epochs: int = 1) -> Path:
    p = project / "presets" / f"bd_{name}.toml"
    p.write_text(demo_preset_text(f"bd_{name}", source=str(source), epochs=epochs, batch_size=8), encoding="utf-8")
    return p


def test_every_case_has_a_maker():
    assert {n for n in globals() if n.startswith("make_")} == {f"make_{n}" for n in EXPECTED}


REFUSED = sorted(n for n, e in EXPECTED.items() if e["exit"] == 2)


@pytest.mark.parametrize("name", REFUSED)
def test_bad_data_refused_before_anything_is_written(name, base, project, preset_text, capsys, fault_report):
    exp = EXPECTED[name]
    folder = project / "bd"  # a short relative data.source (the preset checks shorten long paths)
    folder.mkdir(exist_ok=True)
    path = write_case(name, base, folder)
    preset = preset_for(preset_text, project, name, path.relative_to(project))
    before = sorted(p.name for p in project.iterdir())
    rc = cli.main(["--preset", str(preset)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert rc == 2, f"{name}: exit {rc}\n{err}"
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, f"{name}: expected one line, got:\n{err}"
    m = LINE.fullmatch(lines[0])
    assert m, lines[0]
    assert m["where"].startswith(f"{preset}:"), lines[0]
    assert m["field"] == exp["field"], lines[0]
    assert path.name in m["msg"] and exp["match"] in m["msg"], lines[0]
    assert sorted(p.name for p in project.iterdir()) == before  # no logs/, checkpoints/, data/
    assert not (project / "logs").exists() and not (project / "checkpoints").exists()
    fault_report["bad data files refused (tui_ft.cli.main)"] += 1


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.mark.slow
def test_bad_rows_left_out_and_run_proceeds(base, project, preset_text, tui_ft_cli, fault_report):
    """Z > 94, overlapping atoms, target 1e300, null target, a structure that is not a dict and a
    duplicate id: those rows are left out by id with their reason and the run finishes (exit 0)
    with a finite validation MAE."""
    name = "bad_rows_some"
    path = write_case(name, base, project.parent)
    preset = preset_for(preset_text, project, name, path)
    res = tui_ft_cli("--preset", preset, "--plain", timeout=600)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == EXPECTED[name]["exit"], res.stderr
    (run_dir,) = (project / "logs").iterdir()
    events = _events(run_dir)
    started = next(e for e in events if e["type"] == "run_started")
    assert sorted(started["skipped"]) == sorted(EXPECTED[name]["left_out"])
    assert any(e["type"] == "run_finished" for e in events)
    for ident, why in [("demo-003", "Am (Z=95)"), ("demo-005", "overlapping atoms"), ("demo-007", "beyond"),
                       ("demo-013", "duplicate id 'demo-013' (also row 14)")]:
        assert any(ident in line and why in line for line in res.stderr.splitlines()), (ident, res.stderr)
    ends = [e for e in events if e["type"] == "epoch_end"]
    assert ends and all(e["val_mae"] == e["val_mae"] and e["val_mae"] < 1e3 for e in ends)  # finite, not NaN
    fault_report["bad data rows left out of a run that proceeds"] += len(started["skipped"])


@pytest.mark.slow
def test_overlapping_atoms_everywhere_fail_the_run_with_the_reason(base, project, preset_text, tui_ft_cli):
    """Overlap is found when graphs are built (it needs the geometry), i.e. by the run, not by the data
    check: with no structure left the run fails (exit 1) naming the reason, and trains nothing."""
    b = copy.deepcopy(base)
    b["data"] = [[_overlap(s), y] for s, y in b["data"]]
    path = project.parent / "overlap_all.json"
    path.write_bytes(_json(b))
    res = tui_ft_cli("--preset", preset_for(preset_text, project, "overlap_all", path), "--plain", timeout=600)
    assert "Traceback" not in res.stderr
    assert res.returncode == 1, res.stderr
    assert "overlapping atoms" in res.stderr and "demo-000" in res.stderr
    (run_dir,) = (project / "logs").iterdir()
    assert not any(e["type"] == "epoch_end" for e in _events(run_dir))


def test_fifo_and_device_are_refused_without_opening(tmp_path):
    from tui_ft.core.data.dataset import DataError, load_matbench, read_columns

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for p in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(DataError, match="expected a regular"):
            load_matbench(p)
        with pytest.raises(ValueError, match="expected a regular"):
            read_columns(p)


@pytest.mark.parametrize("preds, rc, text", [
    ([float("nan")] * 12, 1, "the MAE is nan"),
    ([], 2, "no usable rows"),
    ([0.25] * 12, 0, ""),
])
def test_eval_exit_code_follows_its_result(preds, rc, text, project, monkeypatch, capsys, base):
    """`tui-ft eval` ending with a NaN MAE exits 1, with 0 usable rows exits 2, each with the reason."""
    import types

    from tui_ft.core.library import checkpoints as library
    from tui_ft.core.library import predict as predict_mod

    data = project / "eval.json"
    data.write_bytes(_json(copy.deepcopy(base)))
    ckpt = project / "x.pt"
    rows = [types.SimpleNamespace(id=f"demo-{i:03d}", prediction=p, target=0.0, error=p) for i, p in enumerate(preds)]
    failures = [] if preds else [("demo-000", "no graph"), ("demo-001", "no graph"), ("demo-002", "no graph")]
    mae = sum(abs(p) for p in preds) / len(preds) if preds else None
    result = types.SimpleNamespace(rows=rows, failures=failures, mae=mae, unit="eV/atom", target="e_form")
    evaluation = types.SimpleNamespace(result=result, warnings=[], rows="all", n_rows=len(preds) + len(failures), path=data)
    monkeypatch.setattr(library.Library, "resolve_ref", lambda self, ref: types.SimpleNamespace(path=ckpt))
    monkeypatch.setattr(predict_mod, "evaluate_checkpoint", lambda *a, **k: evaluation)
    assert cli.main(["eval", "x.pt", "--data", str(data)]) == rc
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert text in err
    assert ("mae 0.2500" in out) == (rc == 0)


def test_eval_refuses_a_fifo_as_data(project, monkeypatch, capsys):
    import types

    from tui_ft.core.library import checkpoints as library

    fifo = project / "pipe.json"
    os.mkfifo(fifo)
    monkeypatch.setattr(library.Library, "resolve_ref", lambda self, ref: types.SimpleNamespace(path=project / "x.pt"))
    assert cli.main(["eval", "x.pt", "--data", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pipe.json: data file is a pipe (FIFO)" in err
