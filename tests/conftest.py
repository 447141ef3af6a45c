"""Shared fixtures.

``project``
    A fresh project root under ``tmp_path`` with the shipped ``presets/`` copied
    in; ``TUI_FT_HOME`` points at it, the working directory is it, and
    ``TUI_FT_CACHE`` points at one cache folder shared by the whole session, so
    crystal graphs and frozen-backbone features are built once per session.
    Subprocesses started in a test inherit the environment (with
    ``OMP_NUM_THREADS=1``: one torch thread each).

``graph_cache_dir``
    That session-wide cache folder.

``demo_preset``
    ``demo_preset(name, **settings)`` writes a small head-mode preset on the
    demo data into ``<project>/presets/<name>.toml`` and returns its path
    (``preset_text``: the text maker itself, for module-scoped fixtures).

``tui_ft_cli``
    ``tui_ft_cli(*args, **kw)`` runs the real CLI (``python -m tui_ft ...``) in
    a subprocess in the current directory and returns the CompletedProcess.

``dev_data`` and the ``devdata`` marker
    The real dev data, ``../shared/data/mp_e_form_dev.json.gz`` beside the
    repository, which CI has and a fresh clone does not: a test marked
    ``@pytest.mark.devdata`` or using the ``dev_data`` fixture (its path) is
    skipped when the file is absent. Every test that reads it goes through one
    of the two (and bad preset cases through ``needs`` in expected.toml).

``fault_report``
    A session Counter; fault tests add what they tried (presets, kills,
    checkpoints verified) and the totals are printed in the terminal summary.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV_DATA = ROOT.parent / "shared" / "data" / "mp_e_form_dev.json.gz"
DEV_DATA_ABSENT = "dev data file ../shared/data/mp_e_form_dev.json.gz is absent (a fresh clone has none)"

_REPORT = pytest.StashKey[collections.Counter]()


def pytest_configure(config):
    config.stash[_REPORT] = collections.Counter()


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    """Tests marked ``cuda`` are skipped where torch sees no CUDA device."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in cuda_items:
        item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    counts = config.stash.get(_REPORT, None)
    if counts:
        terminalreporter.write_sep("-", "fault tests")
        for key in sorted(counts):
            terminalreporter.write_line(f"{key}: {counts[key]}")


def pytest_runtest_setup(item):
    if item.get_closest_marker("devdata") is not None and not DEV_DATA.is_file():
        pytest.skip(DEV_DATA_ABSENT)


@pytest.fixture(scope="session")
def dev_data() -> Path:
    """The dev data file; the test is skipped without it."""
    if not DEV_DATA.is_file():
        pytest.skip(DEV_DATA_ABSENT)
    return DEV_DATA


@pytest.fixture(scope="session")
def fault_report(pytestconfig) -> collections.Counter:
    return pytestconfig.stash[_REPORT]


@pytest.fixture(scope="session")
def graph_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tui-ft-cache")


def module_project(tmp_path_factory, graph_cache_dir, name: str) -> tuple[Path, pytest.MonkeyPatch]:
    """For a module-scoped fixture (which cannot use ``project``): a project root with the shipped
    presets, made the current one as ``project`` does; undo the returned MonkeyPatch when done."""
    root = tmp_path_factory.mktemp(name) / "project"
    shutil.copytree(ROOT / "presets", root / "presets")
    mp = pytest.MonkeyPatch()
    mp.setenv("TUI_FT_HOME", str(root))
    mp.setenv("TUI_FT_CACHE", str(graph_cache_dir))
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.delenv("NO_COLOR", raising=False)
    mp.chdir(root)
    return root, mp


@pytest.fixture
def project(tmp_path, monkeypatch, graph_cache_dir) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "presets", root / "presets")
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(graph_cache_dir))
    monkeypatch.delenv("NO_COLOR", raising=False)
    # subprocesses: one torch thread (tiny head-mode batches gain nothing from more, and
    # on a busy 2-core machine spinning threads make runs about twice as slow)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(root)
    # cli.main installs a SIGTERM handler when it runs a preset in-process
    sigterm = signal.getsignal(signal.SIGTERM)
    yield root
    signal.signal(signal.SIGTERM, sigterm)


def demo_preset_text(
    name: str,
    *,
    source: str = "demo",
    epochs: int = 6,
    batch_size: int = 8,
    patience: int = 0,
    seed: int = 0,
    lr: float = 1e-3,
) -> str:
    return f"""\
[run]
name = "{name}"
description = "fault tests: head mode on the synthetic demo data"

[data]
source = "{source}"
target = "e_form"
fold = 0
fraction = 1.0

[finetune]
mode = "head"
refit_atomref = true

[optim]
optimizer = "adam"
lr = {lr!r}

[train]
epochs = {epochs}
batch_size = {batch_size}
patience = {patience}
seed = {seed}
device = "cpu"
"""


@pytest.fixture(scope="session")
def preset_text():
    """``demo_preset_text`` for fixtures wider than a test (which cannot use ``project``)."""
    return demo_preset_text


@pytest.fixture
def demo_preset(project):
    def make(name: str = "faults", **kw) -> Path:
        path = project / "presets" / f"{name}.toml"
        path.write_text(demo_preset_text(name, **kw), encoding="utf-8")
        return path

    return make


@pytest.fixture
def tui_ft_cli():
    def run(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tui_ft", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **kw.pop("env", {})},
            **kw,
        )

    return run


def write_demo_forms(root: Path, n: int) -> dict:
    """The first ``n`` demo rows in three forms (tests of the data sources): ``matbench`` (JSON),
    ``cif`` (a folder of CIFs with id_prop.csv), ``xyz`` (an extxyz file); also ``rows``
    (id, Structure, target) and ``root``."""
    import json

    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    from tui_ft.core.data.demo import demo_label, demo_structures

    rows = [(ident, s, demo_label(s)) for ident, s, _ in demo_structures()[:n]]
    root.mkdir(parents=True, exist_ok=True)
    mb = root / "demo.json"
    mb.write_text(json.dumps({"index": [r[0] for r in rows], "columns": ["structure", "e_form"],
                              "data": [[s.as_dict(), y] for _, s, y in rows]}))
    cif = root / "cif"
    cif.mkdir()
    for ident, s, _ in rows:
        s.to(filename=str(cif / f"{ident}.cif"))
    (cif / "id_prop.csv").write_text("".join(f"{i},{y}\n" for i, _, y in rows))
    frames = []
    for ident, s, y in rows:
        a = AseAtomsAdaptor.get_atoms(s)
        a.info = {"id": ident, "e_form": y}
        frames.append(a)
    xyz = root / "demo.extxyz"
    ase.io.write(xyz, frames, format="extxyz")
    return {"rows": rows, "matbench": mb, "cif": cif, "xyz": xyz, "root": root}


async def pilot_ready(pilot, scans: int = 1):
    """The dashboard under a Textual pilot once it has scanned the project ``scans`` times."""
    import time

    app = pilot.app
    deadline = time.monotonic() + 20
    while app.scans < scans:
        assert time.monotonic() < deadline, "no scan"
        await pilot.pause(0.05)
    await pilot.pause()
    return app


async def pilot_until(pilot, cond, what: str, timeout: float = 30.0) -> None:
    """Let the pilot's app run until ``cond()`` holds; fail naming ``what`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


# ---------------------------------------------------------------- a run held at a known moment
# A sitecustomize for the processes a test starts (test-only, through PYTHONPATH): the run
# whose id contains TUI_FT_TEST_HOLD writes the marker file TUI_FT_TEST_HOLD_MARKER (its run id
# and pid) right after it saves its last.pt of an epoch >= TUI_FT_TEST_HOLD_EPOCH, and waits
# there (inside the save's deferred_signals: a Ctrl-C or SIGTERM is delivered when it goes on,
# and its arrival is noted in MARKER.signalled) until the file TUI_FT_TEST_HOLD_GO exists. A test then kills or signals the run at a moment
# the run reported, not at one found by polling: a head-mode epoch on the demo takes ~0.1 s,
# shorter than the window any polling loop could promise to hit on a busy machine.
_HOLD_SITECUSTOMIZE = """\
import importlib.abc, importlib.util, os, signal, sys, time

_NAME = "tui_ft.core.train.engine"


def _note(signum, path):
    # the held run's handler of signum (deferred_signals' own, which restores its originals
    # after the block) also writes path: the test knows that the signal arrived
    handler = signal.getsignal(signum)

    def noted(s, frame):
        open(path, "w").close()
        if callable(handler):
            handler(s, frame)

    signal.signal(signum, noted)


def _patch(module):
    save = module.Trainer._save
    held = []

    def _save(self, kind, epoch, val, epoch_end=None):
        save(self, kind, epoch, val, epoch_end)
        if (kind == "last" and not held and self.dist.writer and epoch >= int(os.environ["TUI_FT_TEST_HOLD_EPOCH"])
                and os.environ["TUI_FT_TEST_HOLD"] in self.ctx.run_id):
            held.append(epoch)
            marker = os.environ["TUI_FT_TEST_HOLD_MARKER"]
            with open(marker + ".tmp", "w") as fh:
                fh.write(f"{self.ctx.run_id} {os.getpid()}")
            os.replace(marker + ".tmp", marker)
            for signum in (signal.SIGINT, signal.SIGTERM):  # deferred_signals' handlers, noted
                _note(signum, marker + ".signalled")
            deadline = time.time() + 900
            while not os.path.exists(os.environ["TUI_FT_TEST_HOLD_GO"]) and time.time() < deadline:
                time.sleep(0.05)

    module.Trainer._save = _save


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _NAME:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("TUI_FT_TEST_HOLD"):
    sys.meta_path.insert(0, _Finder())
"""


class HeldRun:
    """``held_run(run_id_part, after_epoch)``: ``env`` for the processes to start (merged with
    os.environ), ``wait(alive)`` until the run is held (its run id and pid), ``wait_signalled()``
    until a SIGINT/SIGTERM has reached it, ``release()``."""

    def __init__(self, tmp: Path, run_id_part: str, after_epoch: int):
        site = tmp / "hold-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(_HOLD_SITECUSTOMIZE, encoding="utf-8")
        self.marker, self.go = tmp / f"held-{run_id_part}", tmp / f"go-{run_id_part}"
        path = os.pathsep.join(x for x in (str(site), os.environ.get("PYTHONPATH", "")) if x)
        self.env = {"PYTHONPATH": path, "TUI_FT_TEST_HOLD": run_id_part, "TUI_FT_TEST_HOLD_EPOCH": str(after_epoch),
                    "TUI_FT_TEST_HOLD_MARKER": str(self.marker), "TUI_FT_TEST_HOLD_GO": str(self.go)}

    def wait(self, alive, timeout: float = 600) -> tuple[str, int]:
        """Until the run is held; ``alive()`` says (or asserts) that what runs it still runs."""
        import time

        deadline = time.time() + timeout
        while not self.marker.is_file():
            assert alive(), "the process ended before the run was held"
            if time.time() > deadline:
                pytest.fail(f"no run {self.env['TUI_FT_TEST_HOLD']}* saved a last.pt in {timeout:.0f} s")
            time.sleep(0.05)
        rid, pid = self.marker.read_text().split()
        return rid, int(pid)

    def wait_signalled(self, timeout: float = 120) -> None:
        """Until the held run has received a SIGINT or SIGTERM (delivered when it is released)."""
        import time

        deadline = time.time() + timeout
        while not Path(f"{self.marker}.signalled").is_file():
            if time.time() > deadline:
                pytest.fail(f"the held run got no SIGINT/SIGTERM in {timeout:.0f} s")
            time.sleep(0.05)

    def release(self) -> None:
        self.go.write_text("go", encoding="utf-8")

    def kill(self) -> None:
        """SIGKILL the held run (never left waiting after the test)."""
        if self.marker.is_file():
            try:
                os.kill(int(self.marker.read_text().split()[1]), signal.SIGKILL)
            except (ProcessLookupError, IndexError, ValueError):
                pass


@pytest.fixture
def held_run(tmp_path):
    made: list[HeldRun] = []

    def make(run_id_part: str, after_epoch: int = 0) -> HeldRun:
        made.append(HeldRun(tmp_path, run_id_part, after_epoch))
        return made[-1]

    yield make
    for h in made:
        h.release()
        h.kill()
