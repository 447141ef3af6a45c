"""Hostile and broken inputs, round two (issue 12): one test family per cause.

1. ids that reach a path go through one validator (``paths.safe_component``);
3. resume refuses a finished run and a run whose process is alive (the run lock);
   a stale lock (dead pid, reused pid) is taken over;
4. messages state what is on disk (interrupt before epoch 0, NaN at epoch 0);
5. untrusted checkpoints are checked before torch or CHGNet allocate anything;
8. the library shows what the ``.pt`` holds, not what its sidecar claims;
11. an unusable ``init`` checkpoint or a missing CUDA device is a preset error (exit 2);
12. disk full: one line, the previous checkpoint kept, no temp file left;
13. resume does not repeat an ``epoch_end``; a signal after ``run_finished`` exits 0.

Bad checkpoints are generated here (nothing binary is committed). Each bad input:
the documented exit code, one line naming the file/field/id, no traceback, nothing
written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from tui_ft import cli
from tui_ft.core.train import engine
from tui_ft.core.common.events import EpochEnd, RunFailed, RunFinished, RunInterrupted, read_events
from tui_ft.core.library.ckptfile import CheckpointError, CheckpointWriteError, build_model, check_model_args, load_checkpoint, save_checkpoint
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.common.locks import LockHeld, ProcessLock, RunLock, process_start_time
from tui_ft.core.common.paths import Paths, UnsafeName, check_component, safe_component
from tui_ft.core.config.fields import check_name
from tui_ft.core.config.presets import load_preset

HOSTILE_IDS = ["/tmp/abs-run", "../../x", "..", ".", ".hidden", "a/b", "-rf", "a b", "x" * 201, "a\\b", ""]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def chgnet_payload():
    """A real (pretrained) CHGNet's checkpoint payload."""
    m = engine.load_pretrained("0.3.0")
    return {
        "model_state": {k: v.detach().clone() for k, v in m.state_dict().items()},
        "model_args": dict(m.model_args),
        "meta": {"run_id": "src", "kind": "best", "preset_name": "p", "epoch": 1, "val_mae": 0.5,
                 "finished": True, "time": time.time()},
    }


# ---------------------------------------------------------------- 1. ids -> paths


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_unsafe_ids_never_reach_a_path(bad, tmp_path):
    paths = Paths(tmp_path)
    for fn in (paths.run_log_dir, paths.run_ckpt_dir, paths.plan_dir):
        with pytest.raises(UnsafeName) as info:
            fn(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(UnsafeName, match="^run id "):
        safe_component("run id", bad)
    with pytest.raises(UnsafeName):
        RunLock(bad, paths)
    with pytest.raises(LookupError):
        Library(paths).delete(bad)
    if bad and "/" not in bad and "\\" not in bad:
        with pytest.raises(LookupError):
            Library(paths).resolve_ref(f"{bad}@best")
    assert _tree(tmp_path) == set()


def test_preset_names_and_ids_share_one_rule():
    assert check_name("run2") == check_component("run2") == "run2"
    for bad in HOSTILE_IDS:
        with pytest.raises(ValueError) as a:
            check_name(bad)
        with pytest.raises(ValueError) as b:
            check_component(bad)
        if len(bad) <= 64:
            assert str(a.value) == str(b.value)
    check_component("x" * 100)  # run ids (preset name + stamp) may be longer than a preset name
    with pytest.raises(ValueError, match="at most 64"):
        check_name("x" * 100)


def test_control_characters_are_refused_by_name_alike():
    """The ASCII shortcut of the control-character check agrees with the Unicode categories
    (Cc, Cf, Zl, Zp) for every ASCII character, and non-ASCII controls are still caught."""
    import unicodedata

    for code in range(128):
        ch = chr(code)
        control = unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        if control:
            with pytest.raises(ValueError, match="control characters"):
                check_component(f"run{ch}x")
        elif ch.isalnum() or ch in "_.-":
            assert check_component(f"run{ch}x") == f"run{ch}x"
    for ch in ("\u200b", "\u2028", "\u2029", "\x85", "\ufeff"):
        with pytest.raises(ValueError, match="control characters"):
            check_component(f"run{ch}x")


@pytest.mark.parametrize("bad", ["/tmp/abs-run", "../../x", ".hidden", "a/b"])
def test_cli_refuses_unsafe_run_ids(bad, project, demo_preset, capsys):
    preset = demo_preset("ids")
    before = _tree(project)
    assert cli.main(["--preset", str(preset), "--run-id", bad, "--plain"]) == cli.EXIT_USAGE
    line = _one_line(capsys.readouterr().err)
    assert "run id" in line and (bad in line or bad.replace("/", "/") in line)
    assert cli.main(["resume", bad]) == cli.EXIT_USAGE
    assert "run id" in _one_line(capsys.readouterr().err)
    assert cli.main(["eval", f"{bad}@best", "--data", "demo"]) == cli.EXIT_USAGE
    _one_line(capsys.readouterr().err)
    assert _tree(project) == before


# ---------------------------------------------------------------- shared: one finished run


@pytest.fixture(scope="module")
def done_project(tmp_path_factory, graph_cache_dir, preset_text):
    """A project with one finished 2-epoch head-mode run ``done`` (trained once per module)."""
    root = tmp_path_factory.mktemp("safety")
    (root / "presets").mkdir()
    (root / "presets" / "d.toml").write_text(preset_text("d", epochs=2), encoding="utf-8")
    env = dict(os.environ, TUI_FT_HOME=str(root), TUI_FT_CACHE=str(graph_cache_dir), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "tui_ft", "--preset", "presets/d.toml", "--run-id", "done", "--plain"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return root, env


def _cli(root: Path, env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_ft", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _copy_run(root: Path, src: str, dst: str, *, last_epoch: int, drop_finished: bool = True) -> None:
    """``dst``: a copy of run ``src`` whose last.pt is at ``last_epoch`` and unfinished,
    and whose events end before run_finished (as if killed after the epoch's best save)."""
    paths = Paths(root)
    shutil.copytree(paths.run_log_dir(src), paths.run_log_dir(dst))
    shutil.copytree(paths.run_ckpt_dir(src), paths.run_ckpt_dir(dst))
    for kind in ("best", "last"):
        pt = paths.run_ckpt_dir(dst) / f"{kind}.pt"
        pl = load_checkpoint(pt)
        pl["meta"].update(run_id=dst, finished=False, status="running", test_mae=None)
        if kind == "last":
            pl["meta"]["epoch"] = last_epoch
        save_checkpoint(pt, pl)
    ev_path = paths.run_log_dir(dst) / "events.jsonl"
    lines = ev_path.read_text(encoding="utf-8").splitlines()
    if drop_finished:
        lines = [ln for ln in lines if json.loads(ln)["type"] != "run_finished"]
    ev_path.write_text("".join(ln.replace('"run_id": "done"', f'"run_id": "{dst}"') + "\n" for ln in lines),
                       encoding="utf-8")


@pytest.fixture
def live_process():
    """A live child process (its pid and start time), killed after the test."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for _ in range(100):
            if process_start_time(p.pid):
                break
            time.sleep(0.05)
        yield p.pid
    finally:
        p.kill()
        p.wait()


def _hold(lock_path: Path, pid: int, start: str | None) -> None:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path.write_text(json.dumps({"pid": pid, "start": start, "created": time.time()}), encoding="utf-8")


# ---------------------------------------------------------------- 3. resume and the run lock


def test_resume_refuses_a_finished_run(done_project):
    root, env = done_project
    before = (root / "logs" / "done" / "events.jsonl").read_bytes()
    r = _cli(root, env, "resume", "done", "--plain")
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert "done" in line and "already finished" in line
    assert (root / "logs" / "done" / "events.jsonl").read_bytes() == before


def test_resume_refuses_a_live_run_and_touches_nothing(done_project, live_process):
    root, env = done_project
    _copy_run(root, "done", "live", last_epoch=1)
    paths = Paths(root)
    _hold(paths.run_log_dir("live") / "lock", live_process, process_start_time(live_process))
    tmp = paths.run_ckpt_dir("live") / ".last.pt.inflight.tmp"  # the live writer's temp file
    tmp.write_bytes(b"partial")
    events_before = (paths.run_log_dir("live") / "events.jsonl").read_bytes()
    r = _cli(root, env, "resume", "live", "--plain")
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert f"process {live_process}" in line and "lock" in line
    assert tmp.exists()
    assert (paths.run_log_dir("live") / "events.jsonl").read_bytes() == events_before
    # a fresh start under the same run id is refused the same way: nothing written
    r = _cli(root, env, "--preset", "presets/d.toml", "--run-id", "live", "--plain")
    assert r.returncode == 2 and "already running" in _one_line(r.stderr)
    assert (paths.run_log_dir("live") / "events.jsonl").read_bytes() == events_before


def test_run_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path, live_process):
    paths = Paths(tmp_path)
    with RunLock("r", paths) as mine:
        held = json.loads(mine.path.read_text())
        assert held["pid"] == os.getpid() and held["start"] == process_start_time(os.getpid())
        with pytest.raises(LockHeld, match=f"process {os.getpid()}"):
            RunLock("r", paths).acquire()
    assert not (tmp_path / "logs" / "r" / "lock").exists()
    lock = tmp_path / "logs" / "r" / "lock"
    _hold(lock, live_process, process_start_time(live_process))
    with pytest.raises(LockHeld):
        ProcessLock(lock).acquire()
    _hold(lock, live_process, "proc:1")  # the pid was reused by another process: stale
    ProcessLock(lock).acquire().release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _hold(lock, dead.pid, "proc:1")  # its process is gone: stale
    ProcessLock(lock).acquire().release()


def test_two_simultaneous_starts_of_one_run_id_do_not_both_run(project, demo_preset, monkeypatch):
    """The engine takes the lock before it writes anything; a second start finds it held."""
    preset = load_preset(demo_preset("twice"))
    paths = Paths.default()
    with RunLock("same", paths):
        with pytest.raises(engine.RunRefused, match="already running"):
            engine.run_training(preset, run_id="same", paths=paths)
    assert sorted(p.name for p in paths.run_log_dir("same").iterdir()) == []


# ---------------------------------------------------------------- 13. resume dedupe, teardown signal


def test_resume_after_kill_between_best_and_last_does_not_repeat_epoch_end(done_project):
    """Killed after epoch 2's best save, before its last save: events.jsonl has epoch 2,
    last.pt is epoch 1. Resume trains epoch 2 again but writes its epoch_end once.
    The lock left by the killed process (its pid now another process's) is stale."""
    root, env = done_project
    _copy_run(root, "done", "killed", last_epoch=1)
    paths = Paths(root)
    _hold(paths.run_log_dir("killed") / "lock", os.getpid(), "proc:1")
    r = _cli(root, env, "resume", "killed", "--plain")
    assert r.returncode == 0, r.stderr
    events = read_events(paths.run_log_dir("killed") / "events.jsonl")
    epochs = [ev.epoch for ev in events if isinstance(ev, EpochEnd)]
    assert epochs == [0, 1, 2], epochs
    assert sum(isinstance(ev, RunFinished) for ev in events) == 1
    assert not (paths.run_log_dir("killed") / "lock").exists()
    assert Library(paths).get("killed", "last").meta.finished is True


def test_resume_after_kill_between_last_save_and_epoch_end_logs_that_epoch_once(done_project):
    """Killed after epoch 2's last.pt, before its epoch_end line: resume writes the epoch_end
    kept in last.pt, so every epoch is logged exactly once."""
    root, env = done_project
    _copy_run(root, "done", "lostline", last_epoch=2)
    paths = Paths(root)
    ev_path = paths.run_log_dir("lostline") / "events.jsonl"
    lines = ev_path.read_text(encoding="utf-8").splitlines()
    lines = [ln for ln in lines if not (json.loads(ln)["type"] == "epoch_end" and json.loads(ln)["epoch"] == 2)]
    ev_path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    r = _cli(root, env, "resume", "lostline", "--plain")
    assert r.returncode == 0, r.stderr
    events = read_events(ev_path)
    assert [ev.epoch for ev in events if isinstance(ev, EpochEnd)] == [0, 1, 2]
    assert isinstance(events[-1], RunFinished)


@pytest.mark.parametrize("when", ["after_run_finished", "while_marking_finished"])
def test_signal_during_teardown_exits_0_finished(when, project, demo_preset, monkeypatch, capsys):
    preset = demo_preset("teardown", epochs=1)
    sent = []
    real_emit = engine.Trainer.emit
    real_write = engine.Trainer._write_checkpoint

    def emit(self, ev):
        real_emit(self, ev)
        if when == "after_run_finished" and isinstance(ev, RunFinished):
            sent.append(os.kill(os.getpid(), signal.SIGTERM))

    def write(self, path, payload):
        if when == "while_marking_finished" and payload["meta"].get("finished") and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
        real_write(self, path, payload)

    monkeypatch.setattr(engine.Trainer, "emit", emit)
    monkeypatch.setattr(engine.Trainer, "_write_checkpoint", write)
    assert cli.main(["--preset", str(preset), "--run-id", "td", "--plain"]) == cli.EXIT_OK
    assert sent
    events = read_events(Paths.default().run_log_dir("td") / "events.jsonl")
    assert isinstance(events[-1], RunFinished)
    assert not any(isinstance(ev, (RunInterrupted, RunFailed)) for ev in events)


# ---------------------------------------------------------------- 4. messages state what is on disk


def test_interrupt_before_any_checkpoint_says_nothing_was_saved(project, demo_preset, monkeypatch):
    preset = load_preset(demo_preset("early"))

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Trainer, "_load_data", interrupted)
    res = engine.run_training(preset, run_id="early", paths=Paths.default())
    assert res.status == "interrupted"
    ev = [e for e in read_events(Paths.default().run_log_dir("early") / "events.jsonl") if isinstance(e, RunInterrupted)]
    assert len(ev) == 1 and "no checkpoint was saved" in ev[0].message and "last.pt saved" not in ev[0].message
    assert not (Paths.default().run_ckpt_dir("early") / "last.pt").exists()


def test_nan_at_epoch_0_does_not_claim_a_best_checkpoint(project, demo_preset, monkeypatch):
    preset = load_preset(demo_preset("nan0"))
    monkeypatch.setattr(engine.Trainer, "_predict", lambda self, part: torch.full((len(getattr(self.splits, part)),), float("nan")))
    res = engine.run_training(preset, run_id="nan0", paths=Paths.default())
    assert res.status == "failed"
    assert "no checkpoint was saved" in res.message and "epoch -1" not in res.message
    assert not (Paths.default().run_ckpt_dir("nan0") / "best.pt").exists()


# ---------------------------------------------------------------- 5. untrusted checkpoints


def _inflating_checkpoint(path: Path, inflated: int) -> Path:
    """A torch-like zip whose one record is deflated: small on disk, ``inflated`` bytes unpacked."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with zf.open("archive/data/0", "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(inflated >> 20):
                fh.write(chunk)
    return path


def test_inflating_record_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    bomb = _inflating_checkpoint(tmp_path / "bomb.pt", 256 << 20)
    assert bomb.stat().st_size < 2 << 20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(CheckpointError, match="inflate") as info:
        load_checkpoint(bomb)
    assert str(bomb) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "args, field",
    [
        ({"atom_fea_dim": 10**9}, "atom_fea_dim"),
        ({"mlp_hidden_dims": [4096] * 1000}, "mlp_hidden_dims"),
        ({"atom_graph_cutoff": 1e9}, "atom_graph_cutoff"),
        ({"atom_graph_cutoff": 0}, "atom_graph_cutoff"),
        ({"n_conv": "4"}, "n_conv"),
        ({"update_bond": 1}, "update_bond"),
        ({"non_linearity": "os.system"}, "non_linearity"),
        ({"evil": 1}, "evil"),
        ([1, 2], "model_args"),
    ],
)
def test_bad_model_args_are_refused_before_a_model_is_built(args, field, tmp_path, monkeypatch):
    import chgnet.model

    path = tmp_path / "bad.pt"
    torch.save({"model_state": {"w": torch.zeros(2)}, "model_args": args, "meta": {}}, path)
    monkeypatch.setattr(chgnet.model.CHGNet, "__init__", lambda *a, **k: pytest.fail("CHGNet built"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: model_args") and field in msg and "\n" not in msg


def test_model_args_keys_are_chgnets(chgnet_payload):
    import inspect

    from chgnet.model import CHGNet

    from tui_ft.core.library.ckptfile import _MODEL_ARGS

    named = set(inspect.signature(CHGNet.__init__).parameters) - {"self", "kwargs"}
    assert named <= set(_MODEL_ARGS)
    assert check_model_args(chgnet_payload["model_args"]) == chgnet_payload["model_args"]


def test_weights_that_do_not_fit_model_args_are_refused(chgnet_payload):
    other = dict(chgnet_payload, model_args=dict(chgnet_payload["model_args"], atom_fea_dim=32))
    with pytest.raises(CheckpointError, match="shape|another architecture"):
        build_model(other, "x.pt")
    fewer = dict(chgnet_payload, model_state=dict(list(chgnet_payload["model_state"].items())[:-1]))
    with pytest.raises(CheckpointError, match="missing"):
        build_model(fewer, "x.pt")
    assert build_model(chgnet_payload, "x.pt") is not None


def test_legacy_and_plain_state_dict_checkpoints_are_refused(tmp_path, chgnet_payload):
    legacy = tmp_path / "legacy.pt"
    torch.save(chgnet_payload, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a torch zip archive"):
        load_checkpoint(legacy)
    plain = tmp_path / "plain.pt"
    torch.save(chgnet_payload["model_state"], plain)
    with pytest.raises(CheckpointError, match="no model_state"):
        load_checkpoint(plain)


# ---------------------------------------------------------------- 8. the .pt over the sidecar


def _small_payload(run_id: str, kind: str, epoch: int, val: float) -> dict:
    return {
        "model_state": {"w": torch.arange(4.0)},
        "model_args": {"atom_fea_dim": 64},
        "meta": {"run_id": run_id, "kind": kind, "preset_name": "p", "epoch": epoch, "val_mae": val,
                 "finished": False, "time": time.time()},
    }


def test_library_shows_the_checkpoint_not_a_lying_missing_or_garbage_sidecar(tmp_path, caplog):
    paths = Paths(tmp_path)
    for rid in ("lying", "nosidecar", "garbage", "torn"):
        save_checkpoint(paths.run_ckpt_dir(rid) / "best.pt", _small_payload(rid, "best", 3, 0.25))
    side = paths.run_ckpt_dir("lying") / "best.json"
    meta = json.loads(side.read_text())
    meta.update(epoch=99, val_mae=0.001, run_id="someone-else")
    side.write_text(json.dumps(meta))
    (paths.run_ckpt_dir("nosidecar") / "best.json").unlink()
    (paths.run_ckpt_dir("garbage") / "best.json").write_text("\x00\x01 not json")
    # killed between the two renames: the new .pt (epoch 4) is in place, the sidecar is the old one
    pt = paths.run_ckpt_dir("torn") / "best.pt"
    old_side = (paths.run_ckpt_dir("torn") / "best.json").read_text()
    save_checkpoint(pt, _small_payload("torn", "best", 4, 0.2))
    (paths.run_ckpt_dir("torn") / "best.json").write_text(old_side)

    lib = Library(paths)
    with caplog.at_level("WARNING", logger="tui_ft.library"):
        items = {c.run_id: c for c in lib.list()}
        lib.list()
    assert set(items) == {"lying", "nosidecar", "garbage", "torn"}
    assert (items["lying"].epoch, items["lying"].val_mae, items["lying"].meta.run_id) == (3, 0.25, "lying")
    assert items["nosidecar"].epoch == 3 and items["garbage"].epoch == 3
    assert (items["torn"].epoch, items["torn"].val_mae) == (4, 0.2)
    assert lib.resolve_ref("lying@best").epoch == 3 and lib.get("torn").epoch == 4
    assert "disagrees" in lib.problems[side] and "epoch" in lib.problems[side] and "run_id" in lib.problems[side]
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 4, reports  # one per bad sidecar, though listed twice


# ---------------------------------------------------------------- 11. preset checks before a run folder


def _bad_init_checkpoints(root: Path, good: dict) -> dict[str, Path]:
    d = root / "bad_ckpts"
    d.mkdir()
    out = {}
    full = d / "full.pt"
    torch.save(good, full)
    out["truncated"] = d / "truncated.pt"
    out["truncated"].write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out["state_dict"] = d / "state_dict.pt"
    torch.save(good["model_state"], out["state_dict"])
    out["architecture"] = d / "architecture.pt"
    torch.save(dict(good, model_args=dict(good["model_args"], atom_fea_dim=32)), out["architecture"])
    out["model_args"] = d / "model_args.pt"
    torch.save(dict(good, model_args=dict(good["model_args"], atom_fea_dim=10**8)), out["model_args"])
    full.unlink()
    return out


def test_unusable_init_checkpoint_is_a_preset_error(project, demo_preset, chgnet_payload, capsys):
    bad = _bad_init_checkpoints(project, chgnet_payload)
    text = demo_preset("initbad").read_text()
    for what, path in bad.items():
        preset = project / "presets" / f"init-{what}.toml"
        preset.write_text(text.replace('[finetune]', f'[model]\ninit = "{path}"\n\n[finetune]'))
        assert cli.main(["--preset", str(preset), "--plain"]) == cli.EXIT_USAGE, what
        line = _one_line(capsys.readouterr().err)
        assert str(preset) in line and "model.init" in line and str(path) in line, line
    assert not (project / "logs").exists() and not (project / "checkpoints").exists()


def test_cuda_device_without_cuda_is_a_preset_error(project, demo_preset, capsys):
    text = demo_preset("dev").read_text()
    devices = ["cuda:99"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for dev in devices:
        preset = project / "presets" / "dev.toml"
        preset.write_text(text.replace('device = "cpu"', f'device = "{dev}"'))
        assert cli.main(["--preset", str(preset), "--plain"]) == cli.EXIT_USAGE
        line = _one_line(capsys.readouterr().err)
        assert "train.device" in line and dev in line
    assert not (project / "logs").exists()


# ---------------------------------------------------------------- 12. disk full


class _FullDisk:
    """A file object that accepts ``room`` bytes, then fails with ENOSPC."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@pytest.mark.parametrize("room", [0, 700])
def test_disk_full_says_so_and_keeps_the_previous_checkpoint(room, tmp_path, monkeypatch):
    import tui_ft.core.common.atomic as atomic

    path = tmp_path / "checkpoints" / "r" / "last.pt"
    save_checkpoint(path, _small_payload("r", "last", 1, 0.5))
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), room))
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, _small_payload("r", "last", 2, 0.4))
    monkeypatch.undo()
    assert str(info.value) == f"no space left on device ({path}); the previous checkpoint is kept"
    assert path.read_bytes() == before and load_checkpoint(path)["meta"]["epoch"] == 1
    assert sorted(os.listdir(path.parent)) == ["last.json", "last.pt"]  # no temp file left


def test_torch_writer_error_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, _small_payload("r", "best", 1, 0.5))

    def enforce_fail(obj, fh, *a, **k):
        fh.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, _small_payload("r", "best", 2, 0.4))
    assert "no space left on device" in str(info.value) and "enforce" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["best.json", "best.pt"]


def test_disk_full_during_a_run_fails_it_with_one_line(project, demo_preset, monkeypatch, capsys):
    preset = demo_preset("full", epochs=2)
    real = engine.save_checkpoint
    calls = []

    def save(path, payload):
        calls.append(path)
        if len(calls) > 2:  # epoch 0's best and last are written, then the disk is full
            raise CheckpointWriteError(f"no space left on device ({path}); the previous checkpoint is kept")
        real(path, payload)

    monkeypatch.setattr(engine, "save_checkpoint", save)
    assert cli.main(["--preset", str(preset), "--run-id", "full", "--plain"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "no space left on device" in err and "Traceback" not in err and "enforce" not in err
    assert load_checkpoint(Paths.default().run_ckpt_dir("full") / "last.pt")["meta"]["epoch"] == 0
