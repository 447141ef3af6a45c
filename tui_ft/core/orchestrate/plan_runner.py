"""The plan runner: runs a validated :class:`~tui_ft.core.orchestrate.plans.Plan`'s stages in order.

The plan *description* (parsing, checks, gates) is :mod:`tui_ft.core.orchestrate.plans`;
this module runs it and keeps its state.

State and resume: ``logs/.plans/<plan-name>/state.json`` (written atomically)
records each stage's run id, status and metrics as a :class:`PlanState`.
Running a plan whose state shows an unfinished plan run (interrupted, failed,
or killed) resumes it: the finished stages at the front are kept -- as long as
their preset, after overrides, is unchanged and their best checkpoint still
exists -- and the plan goes on with the first stage that did not finish. That
stage starts afresh from its ``init`` under a new run id (an interrupted stage
is *not* continued from its ``last.pt``: simple and always correct;
``tui-ft resume RUN_ID`` can still continue that run on its own). A finished
plan (all stages done, or stopped by a gate) run again starts a new plan run.

A ``state.json`` that cannot be read as a plan state (bad JSON, a wrong type,
another format) is reported once, kept aside as ``state.json.bad``, and the
plan starts anew; :func:`read_state` returns None for it, never raises.

One run at a time: :class:`PlanLock` is the file ``logs/.plans/<name>/lock``,
created with ``O_CREAT | O_EXCL`` and holding the owner's pid and process
start time. A second start of the same plan while the first is alive does not
run (:func:`run_plan` returns ``"stopped"``); a lock left by a dead process,
or by a pid now used by another process, is stale and taken over.

This module does not import torch or textual at import time.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import TypeAdapter, ValidationError

from tui_ft.core.common.files import STATE_MAX_BYTES, read_regular_bytes
from tui_ft.core.common.locks import LOCK_NAME, LockHeld, ProcessLock, process_start_time
from tui_ft.core.common.paths import Paths
from tui_ft.core.orchestrate.plans import PREVIOUS, Plan, Stage, _with_changes

__all__ = [
    "STATE_FORMAT",
    "StageState",
    "PlanRunRecord",
    "PlanState",
    "StateError",
    "PlanLock",
    "PlanLocked",
    "state_path",
    "lock_path",
    "load_state",
    "read_state",
    "process_start_time",
    "run_plan",
]

STATE_FORMAT = "tui-ft-plan-state/1"


# --------------------------------------------------------------------------- state


class StateError(ValueError):
    """A ``state.json`` that is not a readable plan state; the message names the file and field."""


@dataclass
class StageState:
    """One stage of one plan run (the JSON keys are those of the dict format before it)."""

    stage: int
    preset: str
    run_id: Optional[str]
    status: str  # running | finished | failed | interrupted
    fingerprint: str
    init: Optional[str] = None
    source: Optional[str] = None
    gate: Optional[str] = None
    metrics: dict[str, Optional[float]] = field(default_factory=dict)
    message: Optional[str] = None
    gate_met: Optional[bool] = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("message", "gate_met"):  # written only when set, as before
            if out[key] is None:
                del out[key]
        return out


@dataclass
class PlanRunRecord:
    """A finished-with plan run, kept in ``history`` (the last 20)."""

    started: Optional[float] = None
    status: Optional[str] = None
    runs: list[Optional[str]] = field(default_factory=list)


@dataclass
class PlanState:
    plan: str
    plan_file: str
    status: str  # running | finished | failed | interrupted
    message: str = ""
    pid: int = 0
    started: Optional[float] = None
    updated: Optional[float] = None
    stages: list[StageState] = field(default_factory=list)
    history: list[PlanRunRecord] = field(default_factory=list)
    format: Literal["tui-ft-plan-state/1"] = STATE_FORMAT

    @classmethod
    def new(cls, plan: Plan, previous: PlanState | None) -> PlanState:
        """A fresh plan run; ``previous`` (if any) goes into the history."""
        history: list[PlanRunRecord] = []
        if previous is not None:
            history = list(previous.history)[-19:]
            history.append(PlanRunRecord(previous.started, previous.status, [s.run_id for s in previous.stages]))
        now = time.time()
        return cls(plan.name, plan.path, "running", "", os.getpid(), now, now, [], history)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stages"] = [s.to_json() for s in self.stages]
        return out

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "state.json") -> PlanState:
        """Parse and check the whole state. Raises :class:`StateError` (never anything else)."""
        try:
            return _STATE_ADAPTER.validate_json(text, strict=True)
        except ValidationError as exc:
            errs = exc.errors()
            first = errs[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
            more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
            raise StateError(f"{source}: {where + ': ' if where else ''}{first['msg']}{more}") from None

    def write(self, paths: Paths) -> None:
        from tui_ft.core.common.atomic import atomic_write_json

        self.updated = time.time()
        atomic_write_json(state_path(self.plan, paths), self.to_json())


_STATE_ADAPTER = TypeAdapter(PlanState)


def state_path(plan_name: str, paths: Paths | None = None) -> Path:
    paths = paths or Paths.default()
    return paths.plan_dir(plan_name) / "state.json"


def load_state(plan_name: str, paths: Paths | None = None) -> PlanState | None:
    """The plan's state; None when there is no state file. Raises :class:`StateError`
    for one that cannot be read or is not a plan state."""
    p = state_path(plan_name, paths)
    try:
        raw = read_regular_bytes(p, STATE_MAX_BYTES)  # a FIFO or a device is refused, never read
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return PlanState.from_json(raw, str(p))


def read_state(
    plan_name: str, paths: Paths | None = None, *, on_error: Callable[[str], None] | None = None
) -> PlanState | None:
    """The plan's state, or None when there is none or it cannot be read
    (then ``on_error`` gets the reason, once)."""
    try:
        return load_state(plan_name, paths)
    except StateError as exc:
        if on_error is not None:
            on_error(str(exc))
        return None


def _resume_point(plan: Plan, state: PlanState | None, paths: Paths) -> tuple[int, str]:
    """How many leading stages of an unfinished plan run can be kept, and why (for the user).
    -1: the state's plan run was complete, start a new one."""
    from tui_ft.core.library.checkpoints import Library

    if state is None:
        return 0, ""
    if state.status == "finished":
        return -1, ""
    lib = Library(paths)
    keep = 0
    for st, rec in zip(plan.stages, state.stages):
        if rec.status != "finished":
            break
        if rec.fingerprint != st.fingerprint:
            return keep, f"stage {st.number} changed since it ran"
        if lib.get(str(rec.run_id), "best") is None:
            return keep, f"stage {st.number}'s checkpoint {rec.run_id}@best is gone"
        if st.gate is not None and not st.gate.holds(rec.metrics)[0]:
            return -1, ""  # that plan run really ended at its gate
        keep += 1
    if keep >= len(plan.stages):
        return -1, ""  # every stage finished: the plan run was complete
    return keep, ""


def _metrics(result) -> dict[str, float | None]:
    hist = list(getattr(result, "history", []) or [])
    trained = [h for h in hist if h.train_mae is not None]
    return {
        "val_mae": hist[-1].val_mae if hist else None,
        "best_val_mae": result.best_val_mae,
        "test_mae": result.test_mae,
        "train_mae": trained[-1].train_mae if trained else None,
    }


# --------------------------------------------------------------------------- lock


PlanLocked = LockHeld  # another live process holds the plan's lock


def lock_path(plan_name: str, paths: Paths | None = None) -> Path:
    return state_path(plan_name, paths).with_name(LOCK_NAME)


class PlanLock(ProcessLock):
    """``logs/.plans/<name>/lock``: a :class:`~tui_ft.core.common.locks.ProcessLock` (taken
    atomically, holding ``{"pid", "start", "created"}``); :meth:`acquire` raises
    :class:`PlanLocked` while another live process holds it."""

    def __init__(self, plan_name: str, paths: Paths | None = None):
        super().__init__(lock_path(plan_name, paths))


# --------------------------------------------------------------------------- running


def run_plan(
    plan: Plan,
    *,
    emit_factory: Callable[[str], Callable[[Any], None]],
    say: Callable[[str], None],
    paths: Paths | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> str:
    """Run (or resume) the plan's stages in order; return the plan's status:
    ``"finished"``, ``"failed"``, ``"interrupted"``, or ``"stopped"``.

    ``"stopped"``: not started, because another live process holds the plan's
    lock (:class:`PlanLock`); ``say`` gets one line naming that process and the
    lock file, nothing is written, and ``tui-ft run PLAN`` exits with code 1
    (``EXIT_FAILED``), as for a failed plan.

    ``emit_factory(run_id)`` gives the display callback for one stage's events
    (the engine itself appends them to ``logs/<run_id>/events.jsonl``);
    ``on_batch`` is passed on to the engine (live progress); ``say`` gets the
    plan's own messages (stage starts, gates, resume). Never raises for a
    failing stage; Ctrl-C (KeyboardInterrupt) ends the plan as ``"interrupted"``.
    """
    paths = paths or Paths.default()
    lock = PlanLock(plan.name, paths)
    try:
        lock.acquire()
    except PlanLocked as exc:
        say(f"plan {plan.name}: {exc}; not started")
        return "stopped"
    try:
        return _PlanRun(plan, paths, emit_factory, say, on_batch).run()
    finally:
        lock.release()


class _PlanRun:
    """One run of a plan, in named steps: :meth:`start` (resume point), :meth:`run_stage`,
    :meth:`passes_gate`, :meth:`record`. Holds the plan's lock while it exists."""

    def __init__(self, plan: Plan, paths: Paths, emit_factory, say, on_batch) -> None:
        from tui_ft.core.library.checkpoints import Library

        self.plan, self.paths, self.say = plan, paths, say
        self.emit_factory, self.on_batch = emit_factory, on_batch
        self.lib = Library(paths)
        self.n = len(plan.stages)
        self.state: PlanState
        self.prev_run: str | None = None  # the run id of the last finished stage
        self.current: StageState | None = None  # the stage whose run is going

    def _say(self, text: str) -> None:
        self.say(f"plan {self.plan.name}: {text}")

    def run(self) -> str:
        keep = self.start()
        status = "finished"
        try:
            for st in self.plan.stages[keep:]:
                status = self.run_stage(st)
                if status != "finished" or not self.passes_gate(st):
                    break
                self.state.write(self.paths)
        except KeyboardInterrupt:
            status = "interrupted"
            if self.current is not None and self.current.status == "running":
                self.current.status = "interrupted"
            self._say("interrupted; run the plan again to resume at the first unfinished stage")
        finally:
            self.record(status)
        return status

    # -- steps

    def previous_state(self) -> PlanState | None:
        """The state left by the last run of the plan; an unreadable one is reported and kept aside."""
        p = state_path(self.plan.name, self.paths)
        try:
            return load_state(self.plan.name, self.paths)
        except StateError as exc:
            aside = p.with_name(p.name + ".bad")
            try:
                os.replace(p, aside)
                kept = f"; kept as {aside}"
            except OSError:
                kept = ""
            self._say(f"ignoring the plan state: {exc}{kept}; starting anew")
            return None

    def start(self) -> int:
        """Resume the unfinished plan run or start a new one; write the state; return
        the number of leading stages kept."""
        old = self.previous_state()
        keep, why = _resume_point(self.plan, old, self.paths)
        if keep > 0 and old is not None:
            old.status, old.message, old.pid, old.plan_file = "running", "", os.getpid(), self.plan.path
            old.stages = old.stages[:keep]
            self.state = old
            done = ", ".join(f"stage {r.stage} = {r.run_id}" for r in old.stages)
            self._say(f"resuming at stage {keep + 1} of {self.n} ({done} already finished)")
            self.prev_run = old.stages[-1].run_id
        else:
            if old is not None and old.status != "finished" and keep == 0 and old.stages:
                self._say(f"the unfinished plan run cannot be resumed ({why or 'no stage finished'}); starting anew")
            self.state = PlanState.new(self.plan, old)
            keep = 0
        self.state.write(self.paths)
        return keep

    def resolve_init(self, st: Stage) -> str | None:
        """The stage's start checkpoint as a library reference. Raises LookupError."""
        if not st.init:
            return None
        if st.init.startswith(f"{PREVIOUS}@"):
            return f"{self.prev_run}@{st.init.split('@', 1)[1]}"
        info = self.lib.resolve_ref(st.init)
        # pin "run1@best" to the run it means now; a .pt path stays a path
        return st.init if st.init.endswith(".pt") else info.ref

    def run_stage(self, st: Stage) -> str:
        """Run one stage as a library run; return its status. Records it in the state."""
        from tui_ft.core.train.engine import run_training
        from tui_ft.core.common.events import EventWriter, RunInterrupted
        from tui_ft.core.library.runs import new_run_id

        preset = st.preset
        try:
            init_ref = self.resolve_init(st)
        except LookupError as exc:
            self._say(f"stage {st.number}: init {st.init!r}: {exc}")
            self.state.stages.append(
                StageState(st.number, preset.name, None, "failed", st.fingerprint, init=st.init, message=str(exc))
            )
            return "failed"
        if st.init:
            preset = _with_changes(preset, {"model.init": init_ref, "finetune.refit_atomref": preset.finetune.refit_atomref})
        run_id = new_run_id(preset.name, self.paths)
        rec = StageState(
            st.number, preset.name, run_id, "running", st.fingerprint,
            init=init_ref, source=st.source, gate=st.gate.text if st.gate else None,
        )
        self.state.stages.append(rec)
        self.current = rec
        self.state.write(self.paths)
        start = f", from {init_ref}" if init_ref else ""
        self._say(f"stage {st.number} of {self.n}: preset {preset.name}, run {run_id}{start}")
        emit = self.emit_factory(run_id)
        try:
            result = run_training(
                preset, run_id=run_id, paths=self.paths, emit=emit, plan=self.plan.name, stage=st.number,
                init_override=init_ref, on_batch=self.on_batch,
            )
        except KeyboardInterrupt:  # before the engine's own handler was in place
            rec.status = "interrupted"
            with EventWriter(self.paths.run_log_dir(run_id) / "events.jsonl", echo=emit) as w:
                w.emit(RunInterrupted(run_id, message="interrupted before training started"))
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as run_failed by the engine
            rec.status, rec.message = "failed", f"{type(exc).__name__}: {exc}"
            self._say(f"stage {st.number} failed: {type(exc).__name__}: {exc}")
            return "failed"
        rec.status, rec.metrics = result.status, _metrics(result)
        if result.message:
            rec.message = result.message
        if result.status != "finished":
            self._say(
                f"stage {st.number} {result.status}; the plan stops here "
                f"(run it again to start stage {st.number} afresh, keeping the stages before it)"
            )
            return result.status
        self.current = None
        self.prev_run = run_id
        return "finished"

    def passes_gate(self, st: Stage) -> bool:
        """Check the finished stage's ``continue_if``; False ends the plan (as finished)."""
        if st.gate is None:
            return True
        rec = self.state.stages[-1]
        met, text = st.gate.holds(rec.metrics)
        rec.gate_met = met
        if not met:
            self.state.message = f"stopped after stage {st.number}: {text}"
            self._say(f"gate after stage {st.number}: {text}; the plan ends here (finished)")
            return False
        self._say(f"gate after stage {st.number}: {text}; going on")
        return True

    def record(self, status: str) -> None:
        """Write the plan's final status."""
        self.state.status = status
        if status == "finished" and not self.state.message:
            self.state.message = f"all {self.n} stages finished"
        try:
            self.state.write(self.paths)
        except OSError as exc:  # pragma: no cover - disk trouble on the way out
            self._say(f"could not write {state_path(self.plan.name, self.paths)}: {exc}")
