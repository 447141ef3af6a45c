"""``tui-ft``: the dashboard, or headless runs and library commands.

This module imports nothing heavy at the top so that ``tui-ft --help`` answers
without loading torch. Exit codes: 0 done, 1 run failed, 2 usage or preset
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
A terminal workbench for fine-tuning CHGNet on Matbench property tasks.

  tui-ft                              open the dashboard
  tui-ft --preset presets/run2.toml   run a preset (or a two-stage plan) headless
  tui-ft resume RUN_ID                continue an interrupted run from its last epoch
  tui-ft eval CKPT --data FILE        MAE of a checkpoint on a Matbench-layout file
  tui-ft runs | checkpoints           list runs / the checkpoint library
  tui-ft data fetch matbench_mp_e_form   download the Matbench file (needs network)

Exit codes: 0 done, 1 run failed, 2 usage or preset error, 130 interrupted.
"""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tui-ft", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", metavar="FILE", help="run this preset or plan headless, then exit")
    ap.add_argument("--run-id", metavar="ID", help=argparse.SUPPRESS)  # the dashboard allocates ids
    ap.add_argument("--plain", action="store_true", help="one plain line per epoch even on a terminal")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    # a subcommand's options default to SUPPRESS: unset, they must not overwrite the
    # same option given before the subcommand (`tui-ft --plain run x.toml`)
    r = sub.add_parser("run", help="run a preset or plan headless (same as --preset)")
    r.add_argument("file")
    r.add_argument("--plain", action="store_true", default=argparse.SUPPRESS)
    r.add_argument("--run-id", help=argparse.SUPPRESS, default=argparse.SUPPRESS)

    rs = sub.add_parser("resume", help="continue an interrupted or killed run from its last completed epoch")
    rs.add_argument("run_id")
    rs.add_argument("--plain", action="store_true", default=argparse.SUPPRESS)

    ev = sub.add_parser("eval", help="MAE of a checkpoint on a Matbench-layout file")
    ev.add_argument("checkpoint", help="a .pt path or a reference such as run1@best")
    ev.add_argument("--data", required=True, help="Matbench-layout .json or .json.gz file (or 'demo')")
    ev.add_argument("--target", default="e_form", help="target column (default e_form)")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    sub.add_parser("runs", help="list runs found under logs/")
    ck = sub.add_parser("checkpoints", help="list the checkpoint library")
    ck.add_argument("--preset", help="only this preset's checkpoints")

    d = sub.add_parser("data", help="data files")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a Matbench dataset through matminer into data/")
    f.add_argument("name", nargs="?", default="matbench_mp_e_form")
    f.add_argument("--dest", help="folder (default: data/)")
    dsub.add_parser("demo", help="build the offline demo dataset and print its path")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.version:
        from tui_ft import __version__

        print(__version__)
        return EXIT_OK
    if args.command == "run":
        return cmd_run(args.file, run_id=args.run_id, plain=args.plain)
    if args.preset:
        if args.command:
            ap.error("--preset cannot be combined with a command")
        return cmd_run(args.preset, run_id=args.run_id, plain=args.plain)
    if args.command == "resume":
        return cmd_resume(args.run_id, plain=args.plain)
    if args.command == "eval":
        return cmd_eval(args.checkpoint, args.data, args.target, args.device)
    if args.command == "runs":
        return cmd_runs()
    if args.command == "checkpoints":
        return cmd_checkpoints(args.preset)
    if args.command == "data":
        if args.data_command == "fetch":
            return cmd_fetch(args.name, args.dest)
        if args.data_command == "demo":
            from tui_ft.core.demo import ensure_demo_dataset
            from tui_ft.core.paths import Paths

            print(ensure_demo_dataset(Paths.default()))
            return EXIT_OK
        ap.parse_args(["data", "--help"])
    return cmd_dashboard()


# ---------------------------------------------------------------- headless runs


def _install_sigterm() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # a process started in the background by a non-interactive shell inherits an
    # ignored SIGINT; a run must still stop cleanly on Ctrl-C / the dashboard's cancel
    signal.signal(signal.SIGINT, signal.default_int_handler)


def load_and_check(path: str):
    """Load a preset or plan and check its files; print the problems and return None on error."""
    from tui_ft.core.data import read_columns
    from tui_ft.core.library import Library
    from tui_ft.core.presets import PresetError, PresetErrors, check_resources, is_plan_text, parse_preset
    from tui_ft.core.tomlfile import TomlFileError, read_text

    try:
        try:  # read once: PATH may be a pipe, e.g. --preset <(...)
            text = read_text(path, "preset")
        except TomlFileError as exc:
            raise PresetError.from_toml(exc) from None
        if is_plan_text(text):
            from tui_ft.core.plans import check_plan, parse_plan

            plan = parse_plan(text, path)
            check_plan(plan)
            return plan
        preset = parse_preset(text, path)
        check_resources(preset, read_columns=read_columns, resolve_init=lambda ref: Library().resolve_ref(ref))
        return preset
    except PresetErrors as exc:
        for e in exc.errors:
            _err(str(e))
    except PresetError as exc:
        _err(str(exc))
    return None


def cmd_run(path: str, *, run_id: str | None = None, plain: bool = False) -> int:
    loaded = load_and_check(path)
    if loaded is None:
        return EXIT_USAGE
    from tui_ft.core.presets import Preset

    _install_sigterm()
    if isinstance(loaded, Preset):
        return _run_preset(loaded, run_id=run_id, plain=plain)
    from tui_ft.core.plan_runner import run_plan

    printer = make_printer(plain)
    try:
        status = run_plan(loaded, emit_factory=printer.writer_for, say=_err, on_batch=printer.on_batch)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        printer.close()
    return _exit_for(status)


def _exit_for(status: str) -> int:
    return {"finished": EXIT_OK, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_FAILED)


def _run_preset(preset, *, run_id: str | None, plain: bool, resume: bool = False) -> int:
    from tui_ft.core.paths import Paths
    from tui_ft.core.runs import new_run_id

    import tui_ft.core.engine  # noqa: F401 - the slow import (torch, chgnet) before the run folder exists

    paths = Paths.default()
    if run_id is None:
        run_id = new_run_id(preset.name, paths)
    else:
        (paths.logs / run_id).mkdir(parents=True, exist_ok=True)
    printer = make_printer(plain)
    emit = printer.writer_for(run_id)
    try:
        from tui_ft.core.engine import run_training

        try:
            result = run_training(
                preset, run_id=run_id, paths=paths, emit=emit, resume=resume, on_batch=printer.on_batch
            )
        except KeyboardInterrupt:  # interrupted outside the training loop
            from tui_ft.core.events import EventWriter, RunInterrupted

            with EventWriter(paths.run_log_dir(run_id) / "events.jsonl", echo=emit) as w:
                w.emit(RunInterrupted(run_id, message="interrupted before training started"))
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - already recorded as run_failed
            if not printer.failed_shown:  # say it once: the run_failed line already named the error
                _err(f"error: {type(exc).__name__}: {exc}")
            return EXIT_FAILED
    finally:
        printer.close()
    return _exit_for(result.status)


def cmd_resume(run_id: str, *, plain: bool = False) -> int:
    from tui_ft.core.engine import load_run_preset
    from tui_ft.core.paths import Paths
    from tui_ft.core.presets import PresetError, PresetErrors

    paths = Paths.default()
    if not (paths.run_ckpt_dir(run_id) / "last.pt").is_file():
        _err(f"{paths.run_ckpt_dir(run_id) / 'last.pt'}: no last checkpoint for run {run_id!r}; nothing to resume")
        return EXIT_USAGE
    try:
        preset = load_run_preset(paths, run_id)
    except (PresetError, PresetErrors) as exc:
        _err(str(exc))
        return EXIT_USAGE
    _install_sigterm()
    return _run_preset(preset, run_id=run_id, plain=plain, resume=True)


class Printer:
    """Writes each run's events to logs/<run>/events.jsonl and shows them to the user:
    plain lines when stdout is not a terminal (or --plain), a rich display otherwise."""

    def __init__(self, plain: bool):
        self.plain = plain or not sys.stdout.isatty()
        self.failed_shown = False
        self.console = None
        self.status = None
        if not self.plain:
            from rich.console import Console

            self.console = Console(no_color=bool(os.environ.get("NO_COLOR")))
            self.status = self.console.status("starting...")
            self.status.start()

    def writer_for(self, run_id: str):
        """The display callback for a run (the engine itself writes events.jsonl)."""
        return self.show

    def on_batch(self, epoch: int, done: int, total: int) -> None:
        if self.status is not None:
            self.status.update(f"epoch {epoch}: {done}/{total} structures")

    def show(self, ev) -> None:
        """One line per event, the same text the dashboard's log shows (``describe``):
        results on stdout, progress and problems on stderr."""
        from tui_ft.core.events import EpochEnd, Message, RunFailed, describe

        line = describe(ev)
        if isinstance(ev, RunFailed):
            self.failed_shown = True
        if isinstance(ev, Message) and self.status is not None:
            self.status.update(ev.text)
        if line is None:
            return
        if ev.to_stderr:
            _err(line)
        elif self.console is not None:
            self.console.print(line, highlight=False, markup=False)
            if isinstance(ev, EpochEnd) and self.status is not None:
                self.status.update(f"epoch {ev.epoch + 1} training...")
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


def make_printer(plain: bool) -> Printer:
    return Printer(plain)


# ---------------------------------------------------------------- library commands


def cmd_eval(ref: str, data: str, target: str, device: str) -> int:
    from tui_ft.core.data import DataError, resolve_source
    from tui_ft.core.library import CheckpointError, Library

    try:
        info = Library().resolve_ref(ref)
    except LookupError as exc:
        _err(f"{ref}: {exc}")
        return EXIT_USAGE
    try:
        from tui_ft.core.engine import evaluate_checkpoint

        path = resolve_source(data)
        mae, n, skipped = evaluate_checkpoint(info.path, path, target, device=device)
    except (CheckpointError, DataError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    for s in skipped:
        _err(f"[warning] structure {s} left out: graph conversion failed")
    print(f"mae {mae:.4f} eV/atom on {n} structures of {path} (checkpoint {info.path})")
    return EXIT_OK


def _fmt(x, spec=".4f") -> str:
    return "-" if x is None else format(x, spec)


def cmd_runs() -> int:
    from tui_ft.core.runs import list_runs

    runs = list_runs(warn=_err)
    if not runs:
        print("no runs under logs/")
        return EXIT_OK
    print(f"{'run':40} {'preset':22} {'status':11} {'epoch':>5} {'best_val':>9} {'test':>8} {'device':>6}")
    for s in runs:
        ep = "-" if s.epoch is None else str(s.epoch)
        print(f"{s.run_id:40} {s.preset_name:22} {s.status:11} {ep:>5} {_fmt(s.best_val_mae):>9} {_fmt(s.test_mae):>8} {s.device:>6}")
    return EXIT_OK


def cmd_checkpoints(preset: str | None) -> int:
    from tui_ft.core.library import Library

    items = Library().filter(preset=preset)
    if not items:
        print("no checkpoints under checkpoints/")
        return EXIT_OK
    print(f"{'checkpoint':46} {'preset':22} {'epoch':>5} {'val_mae':>8} {'test':>8}  parent")
    for c in items:
        print(f"{c.ref:46} {c.preset_name:22} {_fmt(c.epoch, 'd'):>5} {_fmt(c.val_mae):>8} {_fmt(c.test_mae):>8}  {c.parent or '-'}")
    return EXIT_OK


def cmd_fetch(name: str, dest: str | None) -> int:
    from pathlib import Path

    from tui_ft.core.fetch import FetchError, fetch_matbench

    try:
        path = fetch_matbench(name, Path(dest) if dest else None, progress=_fetch_progress())
    except (FetchError, ValueError) as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    print(path)
    return EXIT_OK


def _fetch_progress():
    if not sys.stderr.isatty():
        return None
    state = {"last": -1}

    def cb(done: int, total: int) -> None:
        pct = int(100 * done / total) if total else -1
        if pct != state["last"]:
            state["last"] = pct
            sys.stderr.write(f"\rdownloading... {pct}%" if pct >= 0 else f"\rdownloading... {done >> 20} MiB")
            sys.stderr.flush()

    return cb


# ---------------------------------------------------------------- dashboard


def cmd_dashboard() -> int:
    from tui_ft.tui.app import TuiFtApp

    app = TuiFtApp()
    app.run()
    return app.return_code or EXIT_OK  # a crash is not a success (Textual sets 1)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
