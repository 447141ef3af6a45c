"""What the dashboard knows that is not about widgets (no Textual here).

:class:`Dashboard` holds the runs (one :class:`RunState` per run folder), the
plans started here, the launch queue, whether the device is busy, the preset
entries and checkpoints of the last scan, and the cache of test predictions.
:class:`RunWatch` is one step of following a live run: new events, new stderr
lines and whether its process is gone. The app wires both to the panes and
its workers; tests drive them without Pilot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from tui_ft.core.common.events import TERMINAL_TYPES, EventFollower, RunStarted
from tui_ft.core.library.checkpoints import CheckpointInfo
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import Preset, load_preset
from tui_ft.core.config.fields import PresetError
from tui_ft.core.common.procs import pid_alive
from tui_ft.core.library.runs import RunSummary
from tui_ft.core.common.metrics import headline, is_potential
from tui_ft.tui.charts import Predictions, PredictionsError, RunSeries, chain_stages, read_predictions, series_from_history
from tui_ft.tui.potential_results import PotentialResults, read_potential_results
from tui_ft.tui.launcher import STDERR_FILE, LaunchedPlan, LaunchedRun, TextTail, tail_lines
from tui_ft.tui.scanner import PENDING_LIVE_S, FoundRun, PresetEntry, ScanResult, events_signature
from tui_ft.tui.state import LaunchQueue, LogLine, QueueItem, RunState, fmt_mae

Target = Union[Preset, Path]  # what a launch starts: a preset, or a plan file


@dataclass
class ScanChanges:
    """What :meth:`Dashboard.apply_scan` changed."""

    runs_changed: bool  # runs were added or dropped
    to_follow: list[RunState]  # live runs found: follow them
    replaced: list[str] = field(default_factory=list)  # runs read again (new events after they had ended)


class Dashboard:
    """Runs, plans, queue and scan results of one project folder."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.runs: dict[str, RunState] = {}
        self.plans: list[LaunchedPlan] = []  # plan processes started here (their stages are in runs)
        self.queue = LaunchQueue()
        self.preset_entries: list[PresetEntry] = []
        self.checkpoints: list[CheckpointInfo] = []
        self.launching = 0  # launches asked for whose process is not known yet
        self.after_parent = False  # draw a continued run after its parent's last epoch (plans always are)
        self.problems: dict[str, float] = {}  # each distinct problem seen (bad event line, bad sidecar, scan error) -> first seen
        self.presets_sig: tuple | None = None
        self.library_sig: tuple | None = None
        self._predictions: dict[str, Predictions | str] = {}
        self._potential: dict[str, PotentialResults] = {}

    # ------------------------------------------------------------------ runs

    def get(self, run_id: str | None) -> RunState | None:
        return self.runs.get(run_id or "")

    def run(self, run_id: str) -> RunState:
        """The state of ``run_id``, made when it is new."""
        st = self.runs.get(run_id)
        if st is None:
            st = self.runs[run_id] = RunState(RunSummary(run_id=run_id))
        return st

    def settled(self) -> dict[str, tuple]:
        """The runs nobody follows any more, with the events signature they were read at
        (what :func:`tui_ft.tui.scanner.scan` compares to see a run written to again)."""
        return {rid: st.events_sig for rid, st in self.runs.items() if not st.following and st.events_sig is not None}

    def _take_found(self, found: FoundRun, old: RunState | None = None) -> RunState:
        """The state of a run folder as a scan read it: a live one is left to its
        follower (which reads the whole file), an ended one is read in full now
        (one nobody writes to any more without a final event ended badly)."""
        st = found.state if found.state is not None and not found.live else RunState(RunSummary(run_id=found.run_id))
        if old is not None:
            st.overlay = old.overlay
        if not found.live:
            if st.active:
                st.ended(None, tail_lines(self.paths.run_log_dir(found.run_id) / STDERR_FILE, 5))
            st.events_sig = found.sig
        self.runs[found.run_id] = st
        return st

    def apply_scan(self, res: ScanResult) -> ScanChanges:
        """Take in a scan: new run folders, runs that got events after they had
        ended (``tui-ft resume`` in another terminal: read again from the start),
        folders gone, presets and checkpoints when they changed."""
        changed = False
        follow: list[RunState] = []
        replaced: list[str] = []
        for found in res.new_runs:
            if found.run_id in self.runs:
                continue
            st = self._take_found(found)
            if found.live:
                follow.append(st)
            changed = True
        for found in res.changed_runs:
            old = self.runs.get(found.run_id)
            if old is None or old.following or old.events_sig is None:
                continue  # followed again meanwhile (resumed from here): its follower reads the file
            if old.launched is not None and old.launched.poll() is None:
                continue
            st = self._take_found(found, old)
            if found.live:
                follow.append(st)
            replaced.append(found.run_id)
            changed = True
        for run_id in res.gone_runs:
            st = self.runs.get(run_id)
            if st is not None and not st.active:
                del self.runs[run_id]
                changed = True
        if res.presets is not None:
            self.presets_sig = res.presets_sig
            self.preset_entries = res.presets
        if res.library is not None:
            self.library_sig = res.library_sig
            self.checkpoints = res.library
        return ScanChanges(changed, follow, replaced)

    def add_launched(self, launched: LaunchedRun) -> RunState:
        """A run we started: its state (the follower may have made it already).
        A resumed run starts a fresh state: its follower reads the run's whole
        ``events.jsonl`` again, the earlier attempt included."""
        self.launch_done()
        st = self.runs.get(launched.run_id)
        if launched.kind == "resume" and st is not None and not st.following:
            old = st
            st = self.runs[launched.run_id] = RunState(RunSummary(run_id=launched.run_id, preset_name=old.summary.preset_name))
            st.overlay = old.overlay
        if st is None:
            st = self.runs[launched.run_id] = RunState(RunSummary(run_id=launched.run_id, preset_name=launched.preset_name))
        st.launched = launched
        if st.summary.preset_name == "?":
            st.summary.preset_name = launched.preset_name
        return st

    def add_plan(self, launched: LaunchedPlan) -> None:
        self.launch_done()
        self.plans.append(launched)

    def launch_done(self) -> None:
        """A launch asked for has started or failed."""
        self.launching = max(0, self.launching - 1)

    def load_stderr_tail(self, st: RunState) -> None:
        """A run from an earlier session: take in the end of its stderr.log once."""
        if st.launched or st.stderr_loaded:
            return
        st.stderr_loaded = True
        if st.following:
            return
        old = st.add_stderr(tail_lines(self.paths.run_log_dir(st.run_id) / STDERR_FILE, 20))
        if old:
            st.log.insert(len(st.log) - len(old), LogLine("── end of stderr.log ──", "stderr"))

    def training(self) -> list[str]:
        """Our runs and plans whose process still runs (quitting leaves them running)."""
        ours = [st.run_id for st in self.runs.values() if st.launched is not None and st.launched.poll() is None]
        return ours + [f"plan {lp.name}" for lp in self.plans if lp.poll() is None]

    def ended_plans(self) -> list[tuple[LaunchedPlan, int]]:
        """Plans whose process ended since the last call, with the exit code."""
        out = []
        for lp in self.plans:
            rc = lp.poll()
            if rc is not None and not lp.reported:
                lp.reported = True
                out.append((lp, rc))
        return out

    # ------------------------------------------------------------------ queue

    @property
    def device_busy(self) -> bool:
        """A launch on its way, a plan or a run of ours still running, or a
        followed run still active: a queued preset waits."""
        if self.launching:
            return True
        if any(lp.poll() is None for lp in self.plans):
            return True
        for st in self.runs.values():
            if st.launched is not None and st.launched.poll() is None:
                return True
            if st.active and st.following:
                return True
        return False

    def next_queued(self, skipped: Callable[[QueueItem, str], None]) -> Target | None:
        """The next queued preset (loaded) or plan file to start, when the device
        is free; a queued preset that no longer loads is passed to ``skipped``."""
        while (item := self.queue.pop_if_idle(self.device_busy)) is not None:
            if next((e.is_plan for e in self.preset_entries if e.path == item.path), False):
                return item.path
            try:
                return load_preset(item.path)
            except PresetError as exc:
                skipped(item, str(exc))
        return None

    # ------------------------------------------------------------------ charts

    def plan_chain(self, st: RunState, *, any_parent: bool = False) -> list[RunState]:
        """The earlier stages of the plan ``st`` belongs to, followed by ``st``
        (parent links between stages of the same plan), oldest first. With
        ``any_parent`` every parent run still in ``logs/`` is joined in front
        (a run continued from a checkpoint by hand or from the library)."""
        chain = [st]
        seen = {st.run_id}
        cur = st
        while cur.summary.parent and (any_parent or (cur.summary.plan and (cur.summary.stage or 1) > 1)):
            prev = self.runs.get(cur.summary.parent.split("@")[0])
            if prev is None or prev.run_id in seen:
                break
            if not any_parent and prev.summary.plan != cur.summary.plan:
                break
            chain.append(prev)
            seen.add(prev.run_id)
            cur = prev
        return chain[::-1]

    @staticmethod
    def chain_note(chain: list[RunState]) -> str:
        """What a joined curve is, for its title: ``plan: 3 stages`` when each
        run continues the one before in the same plan, ``after its parent`` (or
        ``after 2 earlier runs``) for runs continued from a checkpoint, "" alone."""
        if len(chain) < 2:
            return ""
        plan = chain[-1].summary.plan
        if plan and all(s.summary.plan == plan for s in chain):
            return f"plan: {len(chain)} stages"
        return "after its parent" if len(chain) == 2 else f"after {len(chain) - 1} earlier runs"

    def curve_note(self, run_id: str | None) -> str:
        """:meth:`chain_note` of the curve :meth:`curve` draws for ``run_id``."""
        st = self.get(run_id)
        return "" if st is None else self.chain_note(self.plan_chain(st, any_parent=self.after_parent))

    def curve(
        self, run_id: str | None, metric: str | None = None
    ) -> tuple[RunSeries | None, list[RunSeries], list[float]]:
        """The learning curve of ``run_id`` (its plan's earlier stages joined in
        front), the overlaid runs, and the stage boundaries; ``metric`` (``"force_mae"``)
        draws that named metric instead of the selection value."""
        st = self.get(run_id)
        primary = None
        bounds: list[float] = []
        if st is not None:
            chain = self.plan_chain(st, any_parent=self.after_parent)
            stages = [series_from_history(s.run_id, s.summary.history, metric) for s in chain]
            primary, bounds = chain_stages(stages)
        # the overlaid runs picked out before they are sorted: this runs on every cursor move,
        # and sorting all of them (3,000 runs) took longer than the curves themselves
        overlays = [
            series_from_history(o.run_id, o.summary.history, metric)
            for o in sorted((o for o in self.runs.values() if o.overlay and (st is None or o.run_id != st.run_id)),
                            key=lambda s: s.run_id)
        ]
        return primary, overlays, bounds

    def predictions_path(self, st: RunState) -> Path:
        p = st.summary.predictions
        if p and Path(p).is_absolute() and Path(p).is_file():
            return Path(p)
        return self.paths.run_log_dir(st.run_id) / (Path(p).name if p else "test_predictions.csv")

    def predictions(self, run_id: str | None) -> tuple[str | None, Predictions | None, str]:
        """A finished run's test predictions (read once) or why there are none,
        as the parity and error plots take them: (run id, predictions, note)."""
        st = self.get(run_id)
        if st is None or st.status != "finished":
            if st is not None and st.status in ("failed", "crashed", "interrupted"):
                return None, None, f"no test predictions: the run {st.status}"
            return None, None, "the parity plot and error histogram appear when the run finishes"
        cached = self._predictions.get(st.run_id)
        if cached is None:
            try:
                cached = read_predictions(self.predictions_path(st))
            except PredictionsError as exc:
                cached = str(exc)
            self._predictions[st.run_id] = cached
        return (st.run_id, None, cached) if isinstance(cached, str) else (st.run_id, cached, "")

    @staticmethod
    def is_potential_run(st: RunState | None) -> bool:
        """A run that trains a potential: its epochs or its test carry a potential's named metrics."""
        if st is None:
            return False
        if st.test_metrics and is_potential(st.test_metrics):
            return True
        return any(is_potential(ev.metrics) for ev in st.summary.history[-1:])

    def potential_results(self, run_id: str | None) -> tuple[str | None, PotentialResults | None, str] | None:
        """A finished potential run's test results (read once; see
        :mod:`tui_ft.tui.potential_results`) as (run id, results, note); ``None`` for a run
        that is not a potential (its charts are :meth:`predictions`)."""
        st = self.get(run_id)
        if not self.is_potential_run(st):
            return None
        if st.status != "finished":
            if st.status in ("failed", "crashed", "interrupted"):
                return None, None, f"no test predictions: the run {st.status}"
            return None, None, "the parity plots and error histograms appear when the run finishes"
        res = self._potential.get(st.run_id)
        if res is None:
            res = self._potential[st.run_id] = read_potential_results(self.paths.run_log_dir(st.run_id), st.summary.predictions)
        return st.run_id, res, ""

    def checkpoint_val_text(self, c: CheckpointInfo) -> str:
        """A checkpoint's validation number: a potential's force (else energy) MAE with its unit
        at the checkpoint's epoch (:meth:`CheckpointInfo.val_metrics`; the sidecar holds the
        selection value, by default the unitless weighted loss); a property's MAE."""
        st = self.runs.get(c.run_id)
        return headline(c.val_metrics(st.summary if st is not None else None), "val") or fmt_mae(c.val_mae)

    def test_metrics(self, run_id: str) -> dict[str, float | None] | None:
        """The named test metrics of a run's ``run_finished`` event (None: not finished, or no log)."""
        st = self.runs.get(run_id)
        return st.test_metrics if st is not None else None

    # ------------------------------------------------------------------ problems

    def new_problem(self, text: str) -> bool:
        """Record a problem (a skipped event line, a bad sidecar, a failed
        scan); True the first time this cause is seen, so it is shown once."""
        key = text.strip()
        if not key or key in self.problems:
            return False
        self.problems[key] = time.time()
        return True

    # ------------------------------------------------------------------ presets and checkpoints

    def run_status(self, run_id: str, fallback: str | None = None) -> str:
        """A run's status as its events say (the one source of truth, as in
        ``tui-ft runs``); ``fallback`` when its log folder is gone (a
        checkpoint kept after its logs were deleted)."""
        st = self.runs.get(run_id)
        if st is not None:
            return st.status
        return fallback or "no log"

    def checkpoint_status(self, c: CheckpointInfo) -> str:
        """The status shown for a checkpoint: its run's, from the run's events."""
        return self.run_status(c.run_id, "finished" if c.finished else "no log")

    def init_refs(self) -> list[str]:
        """Checkpoint references the preset form offers for ``model.init``."""
        return sorted({c.ref for c in self.checkpoints} | {f"{c.preset_name}@best" for c in self.checkpoints if c.finished})

    def continue_choices(self) -> list[tuple[Path, str]]:
        """Presets to continue a checkpoint with, best candidates first: those
        that start from a checkpoint, then full-mode ones."""
        ok = [e for e in self.preset_entries if e.ok and e.preset is not None]

        def rank(e: PresetEntry) -> tuple:
            return (0 if e.preset.model.init else 1, 0 if e.preset.finetune.mode == "full" else 1, e.name)

        out = []
        for e in sorted(ok, key=rank):
            p = e.preset
            out.append((e.path, f"{e.name:<22} {p.finetune.mode:<4}  lr {p.optim.lr:.0e}  {p.train.epochs} ep  data {e.data_label}"))
        return out


@dataclass
class Step:
    """One look at a followed run: what is new, and its end when it ended."""

    events: list
    lines: list[str]
    ended: bool = False
    returncode: int | None = None
    stderr_tail: list[str] | None = None
    events_sig: tuple = ()  # the events file's signature before this step read it
    more: bool = False  # the events file has more lines already (a long file is read in steps)


class RunWatch:
    """Follow one run's ``events.jsonl`` and ``stderr.log``.

    It ends when its process (our child) is gone, when the run wrote a final
    event (a run started elsewhere; a ``run_started`` after it, a resume, goes
    on), when the pid the run recorded is dead (one
    more look first: the last lines may still be on their way), or when a run
    that never started shows no change for ``PENDING_LIVE_S``."""

    def __init__(self, paths: Paths, run_id: str, launched: Callable[[], LaunchedRun | None], warn: Callable[[str], None]):
        self.run_dir = paths.run_log_dir(run_id)
        self.launched = launched
        self.events = EventFollower(self.run_dir / "events.jsonl", warn=warn)
        self.stderr = TextTail(self.run_dir / STDERR_FILE)
        self.pid = 0
        self.terminal = False
        self.last_change = time.monotonic()
        self._dead_seen = False

    def _drain(self, step: Step) -> Step:
        events = self.events.poll()
        if events:
            self.last_change = time.monotonic()
            for ev in events:
                if isinstance(ev, RunStarted):  # the first start, or a resume after a final event
                    self.pid = ev.pid
                    self.terminal = False
                    self._dead_seen = False
                if ev.type in TERMINAL_TYPES:
                    self.terminal = True
            step.events += events
        step.more = self.events.behind
        step.lines += self.stderr.poll()
        return step

    def step(self) -> Step:
        step = Step([], [], events_sig=events_signature(self.run_dir))
        self._drain(step)
        if step.more:  # a long file read in steps: it cannot have ended before its last line is read
            return step
        launched = self.launched()
        if launched is not None:
            rc = launched.poll()
            if rc is not None:
                self._drain(step)
                if step.more:
                    return step
                return self._end(step, rc, tail_lines(launched.stderr_path, 8))
        elif self.terminal:
            return self._end(step, None, [])
        elif self.pid and not pid_alive(self.pid):
            if self._dead_seen:  # looked once more after the process was gone
                return self._end(step, None, tail_lines(self.run_dir / STDERR_FILE, 8))
            self._dead_seen = True
        elif not self.pid and time.monotonic() - self.last_change > PENDING_LIVE_S:
            return self._end(step, None, tail_lines(self.run_dir / STDERR_FILE, 8))
        return step

    @staticmethod
    def _end(step: Step, returncode: int | None, tail: list[str]) -> Step:
        step.ended, step.returncode, step.stderr_tail = True, returncode, tail
        return step
