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
A terminal workbench for fine-tuning CHGNet: the interatomic potential on your own
DFT energies, forces and stresses, or one property per structure (Matbench).

  tui-ft                              open the dashboard
  tui-ft --preset presets/run2.toml   run a preset (or a two-stage plan) headless
  tui-ft --preset FILE --detach       start it in the background (survives closing the terminal)
  tui-ft resume RUN_ID                continue an interrupted run from its last epoch
  tui-ft eval CKPT --data SOURCE      MAE of a checkpoint (its own test rows on its own data; a potential's: per target)
  tui-ft predict CKPT INPUT... --out preds.csv   predictions for any data source or structure files
  tui-ft export CKPT OUT.pt           a file chgnet's CHGNet.from_file loads
  tui-ft validate CKPT                a potential's relaxation, EOS, MD, drift and test errors vs the pretrained one
  tui-ft runs | checkpoints           list runs / the checkpoint library (runs --format csv|json)
  tui-ft runs --where "optim.lr < 1e-4 and finetune.mode = full"   only the runs a filter matches
  tui-ft compare RUN RUN...           the preset keys that differ (data and split included) and the results
  tui-ft history RUN|PRESET           a run's metrics, one row per epoch (--format table|csv|json)
  tui-ft sweeps | sweep NAME --best   list hyperparameter sweeps / print a sweep's best preset
  tui-ft ensemble PRESET -k 5         five runs seeds apart; then predict/eval/export ensemble:NAME (mean ± std)
  tui-ft data fetch matbench_mp_e_form   download the Matbench file (needs network)

Exit codes: 0 done (or pruned by its sweep), 1 run failed, 2 usage or preset error, 130 interrupted.
predict: 1 when any structure failed (listed by id; the others are written).
eval: 1 when no row is usable or the MAE is NaN.
"""


from tui_ft.printer import Printer, make_printer  # noqa: E402,F401 - the run display (tests use cli.Printer)
from tui_ft.printer import err as _err  # noqa: E402
from tui_ft.printer import out as _out  # noqa: E402
from tui_ft.printer import silence as _silence  # noqa: E402,F401


PLAIN_HELP = "one plain line per epoch even on a terminal (no live progress bar)"
DEVICE_HELP = "auto (default: CUDA when available), cpu or cuda"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--batch-size``); else one error line, exit 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from tui_ft.core.common.paths import describe_root

    epilog = (
        f"{describe_root()}.\nThe project root (logs/, checkpoints/, data/, .cache/) is TUI_FT_HOME if set, else the\n"
        "nearest folder at or above the current one holding presets/ and a .tui-ft file or tui-ft's\n"
        "pyproject.toml (for --preset FILE: else above FILE), else the current directory."
    )
    ap = argparse.ArgumentParser(
        prog="tui-ft", description=DESCRIPTION, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", metavar="FILE", help="run this preset or plan headless, then exit")
    ap.add_argument(
        "--detach",
        action="store_true",
        help="with --preset/run: start the run in its own session, print its id and log file, and return",
    )
    ap.add_argument("--run-id", metavar="ID", help=argparse.SUPPRESS)  # the dashboard allocates ids
    ap.add_argument("--plain", action="store_true", help=PLAIN_HELP)
    ap.add_argument("--jobs", type=int, default=1, metavar="N", help="a [sweep] preset: N trials at a time (default 1)")
    ap.add_argument("--gpus", metavar="0,1", help="a [sweep] preset: local GPUs, one trial per device")
    ap.add_argument("--executor", choices=["local", "slurm"], help="a [sweep] preset: local processes (default) or Slurm (submitit, [cluster] table)")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    ap.add_argument("--bell", action="store_true",
                    help="the dashboard rings the terminal bell when a run finishes, fails, is interrupted or pruned")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    # a subcommand's options default to SUPPRESS: unset, they must not overwrite the
    # same option given before the subcommand (`tui-ft --plain run x.toml`)
    r = sub.add_parser("run", help="run a preset or plan headless (same as --preset)")
    r.add_argument("file", help="a preset or plan TOML file (e.g. presets/demo.toml)")
    r.add_argument("--plain", action="store_true", default=argparse.SUPPRESS, help=PLAIN_HELP)
    r.add_argument("--detach", action="store_true", default=argparse.SUPPRESS, help="start it in the background")
    r.add_argument("--run-id", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
    r.add_argument("--jobs", type=int, default=argparse.SUPPRESS, metavar="N", help="a [sweep] preset: N trials at a time")
    r.add_argument("--gpus", default=argparse.SUPPRESS, metavar="0,1", help="a [sweep] preset: local GPUs, one trial per device")
    r.add_argument("--executor", choices=["local", "slurm"], default=argparse.SUPPRESS, help="a [sweep] preset: local or slurm")

    rs = sub.add_parser("resume", help="continue an interrupted or killed run from its last completed epoch")
    rs.add_argument("run_id", help="the run to continue, as `tui-ft runs` lists it (its folder under logs/)")
    rs.add_argument("--plain", action="store_true", default=argparse.SUPPRESS, help=PLAIN_HELP)

    ev = sub.add_parser("eval", help="MAE of a checkpoint on a data source (its own test rows on its own data)")
    ev.add_argument("checkpoint", help="a .pt path or a reference such as run1@best, or ensemble:NAME (tui-ft ensemble)")
    ev.add_argument("--data", default=None,
                    help="any data source: Matbench .json[.gz], id_prop.csv folder, extxyz, ... (or 'demo'); a "
                         "potential's checkpoint: frames with labels (extxyz, vasprun.xml, MPtrj/mlearn JSON, .db), "
                         "default its run's own data (its test frames); a property's checkpoint needs it")
    ev.add_argument("--target", default=None, help="target (default: the checkpoint's own)")
    ev.add_argument("--rows", default="auto", choices=["auto", "test", "val", "all"],
                    help="auto (default): the checkpoint's test rows on its own data, else all rows; test / val: its "
                         "own test / validation rows (its own data only); all: every row")
    ev.add_argument("--batch-size", type=positive_int, default=32, help="structures per forward pass (default 32)")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    ev.add_argument("--format", default="table", choices=["table", "json"],
                    help="table (default) or json; a potential's: the MAE of each labelled target (energy meV/atom, "
                         "force meV/Å per component, stress GPa per component, magmom μB)")

    mb = sub.add_parser("matbench", help="run a preset or plan on the Matbench folds as a study (mean ± std, results.json.gz)")
    mb.add_argument("file", metavar="PRESET_OR_PLAN", help="a preset or plan TOML file; its data.fold is replaced by each fold")
    mb.add_argument("--folds", default="0-4", help="folds to run: 0-4 (default), 3, 0,2,4")
    mb.add_argument("--jobs", type=int, help="folds at a time (local: default 1, or one per --gpus device; slurm: all)")
    mb.add_argument("--gpus", help="local GPUs, one fold per device: 0,1,2,3")
    mb.add_argument("--executor", default="local", choices=["local", "slurm"], help="local processes or Slurm (submitit, [cluster] table)")
    mb.add_argument("--name", help="study name (default: the preset's or plan's name); its folder is logs/.studies/NAME")

    en = sub.add_parser("ensemble", help="K runs of a preset or plan that differ only in train.seed, used as one model "
                        "with an uncertainty (ensemble:NAME for predict, eval, export)")
    en.add_argument("file", metavar="PRESET_OR_PLAN", help="a preset or plan TOML file; member k runs it with train.seed + k")
    en.add_argument("-k", "--members", type=int, dest="members", default=None,
                    help="the number of members, 2 to 64 (default: the preset's [ensemble] members)")
    en.add_argument("--jobs", type=int, help="members at a time (local: default 1, or one per --gpus device; slurm: all)")
    en.add_argument("--gpus", help="local GPUs, one member per device: 0,1,2,3")
    en.add_argument("--executor", default="local", choices=["local", "slurm"], help="local processes or Slurm (submitit, [cluster] table)")
    en.add_argument("--name", help="ensemble name (default: the preset's or plan's name); its folder is logs/.studies/NAME")

    pr = sub.add_parser("predict", help="predict any data source, structure files or folders of them (CSV)")
    pr.add_argument("checkpoint", help="a .pt path or a reference such as run1@best, or ensemble:NAME (tui-ft ensemble)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="a data source, a structure file or a folder of them")
    pr.add_argument("--out", help="CSV file to write (default: stdout); not under logs/ or checkpoints/, not an input")
    pr.add_argument("--force", action="store_true", help="replace --out when it is an existing regular file")
    pr.add_argument("--target", default=None, help="target column/key read from the input (default: the checkpoint's)")
    pr.add_argument("--format", default=None,
                    choices=["matbench", "idprop", "ase", "csv", "structures", "vasp", "mptrj", "mlearn", "asedb"],
                    help="how to read the inputs (default: told from each path; vasp, mptrj, mlearn, asedb: frames, "
                         "for a potential's checkpoint)")
    pr.add_argument("--batch-size", type=positive_int, default=32, help="structures per forward pass (default 32)")
    pr.add_argument("--forces", action="store_true",
                    help="a potential's checkpoint: also write forces (eV/Å) to an extxyz file (--xyz, default "
                         "the --out name with .extxyz)")
    pr.add_argument("--stress", action="store_true",
                    help="a potential's checkpoint: also write stresses to the extxyz file, in eV/Å³ with ASE's "
                         "sign (positive = tensile) and Voigt order xx yy zz yz xz xy")
    pr.add_argument("--xyz", metavar="FILE", default=None,
                    help="a potential's checkpoint: the extxyz file (energy in eV, total; with --forces/--stress)")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)

    exp = sub.add_parser("export", help="write a checkpoint as a file chgnet's CHGNet.from_file loads")
    exp.add_argument("checkpoint", help="a .pt path or a reference such as run1@best, or ensemble:NAME (tui-ft ensemble)")
    exp.add_argument("out", help="file to write, e.g. model.pt (an ensemble: a folder, its members and manifest.json); "
                     "not under logs/ or checkpoints/")
    exp.add_argument("--force", action="store_true", help="replace OUT when it is an existing regular file")

    from tui_ft.core.validate.command import add_arguments as validate_arguments

    validate_arguments(sub.add_parser("validate", help="a potential's relaxation, EOS, MD stability, drift and test errors "
                                      "beside the pretrained model (results beside the run)"))

    ru = sub.add_parser("runs", help="list runs found under logs/")
    ru.add_argument("--format", default="table", choices=["table", "csv", "json"],
                    help="csv/json: all columns, times in ISO 8601 (json: also as seconds since 1970)")
    ru.add_argument("--where", metavar="FILTER",
                    help="only the runs this filter matches, e.g. \"finetune.mode = full and optim.lr < 1e-4 and "
                         "data.fold = 0\" (preset keys and results: status, test_mae, preset ~ lpft*, ...; "
                         "and / or / not, parentheses)")
    co = sub.add_parser("compare", help="two or more runs side by side: the preset keys that differ "
                        "(data and split hashes included) and their results")
    co.add_argument("runs", nargs="+", metavar="RUN",
                    help="run ids, preset names (their newest run), RUN@best, or the start of one run id")
    co.add_argument("--format", default="text", choices=["text", "json"],
                    help="text (default): the differing keys, one column per run, then the results; json: the same as an object")
    hi = sub.add_parser("history", help="a run's metrics, one row per epoch")
    hi.add_argument("run_id", metavar="RUN",
                    help="a run id, a preset name (its newest run), RUN@best / PRESET@best (the run of that "
                         "checkpoint) or the start of one run id")
    hi.add_argument("--format", default=None, choices=["table", "csv", "json"],
                    help="table (default on a terminal), csv (default otherwise) or json; times in ISO 8601")
    sub.add_parser("sweeps", help="list hyperparameter sweeps (Optuna studies under logs/.sweeps/)")
    sw = sub.add_parser("sweep", help="a sweep's trials, or its best preset as TOML (--best)")
    sw.add_argument("name", help="the sweep's name, as `tui-ft sweeps` lists it")
    sw.add_argument("--best", action="store_true", help="print the best trial's preset as TOML, ready to save and run")
    ck = sub.add_parser("checkpoints", help="list the checkpoint library")
    # its own dest: the top-level --preset (run a file) must not see it
    ck.add_argument("--preset", dest="filter_preset", metavar="NAME", help="only this preset's checkpoints")

    d = sub.add_parser("data", help="data files")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a Matbench dataset through matminer into data/")
    f.add_argument("name", nargs="?", default="matbench_mp_e_form", help="the Matbench task (default matbench_mp_e_form)")
    f.add_argument("--dest", help="folder (default: data/)")
    dsub.add_parser("demo", help="build the offline demo dataset and print its path")
    return ap


def _ensemble_command(args) -> int:
    """``eval`` / ``predict`` / ``export`` of ``ensemble:NAME`` (tui_ft.commands_ensemble)."""
    from tui_ft import commands_ensemble as ens

    if args.command == "eval":
        return ens.cmd_eval_ensemble(args.checkpoint, args.data, args.target, args.device, args.rows, args.batch_size,
                                     args.format)
    if args.command == "predict":
        return ens.cmd_predict_ensemble(args.checkpoint, args.inputs, args.out, batch_size=args.batch_size,
                                        device=args.device, target=args.target, format=args.format, force=args.force,
                                        forces=args.forces, stress=args.stress, xyz=args.xyz)
    return ens.cmd_export_ensemble(args.checkpoint, args.out, force=args.force)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; its exit code.

    A listing read by ``| head`` (``runs``, ``history``, ``checkpoints``, ``sweeps``,
    ``predict`` to stdout, ...) stops quietly with exit 0 when its reader goes away, as
    ``git log | head`` does: the rest of stdout goes to /dev/null, so neither the
    command nor Python's flush at exit raises ``BrokenPipeError`` (Python's note on
    SIGPIPE: https://docs.python.org/3/library/signal.html#note-on-sigpipe).
    """
    try:
        rc = _main(argv)
        sys.stdout.flush()  # inside the try: what is still buffered meets the closed pipe here
    except BrokenPipeError:
        _silence("stdout")
        return EXIT_OK
    return rc


def _main(argv: list[str] | None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.version:
        from tui_ft import __version__

        print(__version__)
        return EXIT_OK
    if args.preset and args.command:
        hint = " (to filter the library: tui-ft checkpoints --preset NAME)" if args.command == "checkpoints" else ""
        ap.error(f"--preset FILE runs a preset and cannot be combined with the command {args.command!r}{hint}")
    if args.detach and not (args.preset or args.command == "run"):
        ap.error("--detach goes with --preset FILE or run FILE")
    if args.command == "run" or args.preset:
        file = args.file if args.command == "run" else args.preset
        _root_from_preset(file)
        if args.detach:
            return cmd_detach(file)
        return cmd_run(file, run_id=args.run_id, plain=args.plain, jobs=args.jobs, gpus=args.gpus, executor=args.executor)
    if args.command == "resume":
        return cmd_resume(args.run_id, plain=args.plain)
    if args.command in ("eval", "predict", "export", "history", "compare") or (args.command == "runs" and args.format != "table"):
        from tui_ft import commands_io as io

        if args.command in ("eval", "predict", "export") and args.checkpoint.startswith("ensemble:"):
            return _ensemble_command(args)
        if args.command == "eval":
            return io.cmd_eval(args.checkpoint, args.data, args.target, args.device, args.rows, args.batch_size,
                               args.format)
        if args.command == "predict":
            return io.cmd_predict(args.checkpoint, args.inputs, args.out, batch_size=args.batch_size,
                                  device=args.device, target=args.target, format=args.format, force=args.force,
                                  forces=args.forces, stress=args.stress, xyz=args.xyz)
        if args.command == "export":
            return io.cmd_export(args.checkpoint, args.out, force=args.force)
        if args.command == "history":
            return io.cmd_history(args.run_id, args.format)
        if args.command == "compare":
            return io.cmd_compare(args.runs, args.format)
        return io.cmd_runs_export(args.format, args.where)
    if args.command == "validate":
        from tui_ft.core.validate.command import main as validate_main

        return validate_main(args, err=_err)
    if args.command == "matbench":
        from tui_ft.core.orchestrate.study import run as run_study

        return run_study(args.file, folds=args.folds, jobs=args.jobs, gpus=args.gpus, executor=args.executor, name=args.name)
    if args.command == "ensemble":
        from tui_ft.core.orchestrate import ensemble

        return ensemble.run(args.file, k=args.members, jobs=args.jobs, gpus=args.gpus, executor=args.executor,
                            name=args.name)
    if args.command == "runs":
        return cmd_runs(args.where)
    if args.command == "checkpoints":
        return cmd_checkpoints(args.filter_preset)
    if args.command in ("sweeps", "sweep"):
        from tui_ft.core.orchestrate.sweep import cmd_sweeps

        return cmd_sweeps(args.name if args.command == "sweep" else None, best=getattr(args, "best", False), err=_err)
    if args.command == "data":
        if args.data_command == "fetch":
            return cmd_fetch(args.name, args.dest)
        if args.data_command == "demo":
            from tui_ft.core.data.demo import ensure_demo_dataset
            from tui_ft.core.common.paths import Paths

            print(ensure_demo_dataset(Paths.default()))
            return EXIT_OK
        ap.parse_args(["data", "--help"])
    return cmd_dashboard(bell=args.bell)


# ---------------------------------------------------------------- headless runs


def _root_from_preset(file: str) -> None:
    """With no TUI_FT_HOME and no project root above the current directory, the
    project root is the one above the preset file (``cd .. && tui-ft --preset
    tui-ft/presets/demo.toml`` keeps its files in tui-ft/)."""
    from pathlib import Path

    from tui_ft.core.common.paths import HOME_ENV, find_project_root, project_root

    if project_root()[1] != "cwd":
        return
    found = find_project_root(Path(file).expanduser().parent)
    if found is not None:
        os.environ[HOME_ENV] = str(found)  # this process and the runs it starts


def cmd_detach(path: str) -> int:
    """Check the preset or plan, then start it in its own session (stdin from
    /dev/null, output to a log file) so it survives the terminal closing; print
    the run id and where its log is."""
    import subprocess
    import time
    from pathlib import Path

    from tui_ft.core.common.paths import HOME_ENV, Paths
    from tui_ft.core.config.presets import Preset
    from tui_ft.core.library.runs import new_run_id

    file = Path(path).expanduser()
    if file.exists() and not file.is_file():
        _err(f"{path}: --detach needs a preset file, not a pipe (the run reads it after this command returns)")
        return EXIT_USAGE
    loaded = load_and_check(path)
    if loaded is None:
        return EXIT_USAGE
    paths = Paths.default()
    cmd = [sys.executable, "-m", "tui_ft", "--preset", str(file.resolve()), "--plain"]
    if isinstance(loaded, Preset):
        run_id = new_run_id(loaded.name, paths)
        cmd += ["--run-id", run_id]
        log = paths.run_log_dir(run_id) / "stdout.log"
        what = f"run {run_id}"
    else:  # a plan names its runs as it goes
        log = paths.logs / ".detached" / f"{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        what = f"plan {loaded.name}"
    env = {**os.environ, HOME_ENV: str(paths.root), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _out(f"started {what} in the background (pid {proc.pid}); log: {log}")
    if isinstance(loaded, Preset):
        _out(f"events: {paths.run_log_dir(run_id) / 'events.jsonl'}; `tui-ft runs` or the dashboard follow it")
    return EXIT_OK


_FINISHED: list[str] = []  # run ids whose run_finished was written: a later signal is ignored


def _install_sigterm() -> None:
    def handler(signum, frame):  # noqa: ARG001
        if _FINISHED:  # the run has finished; it is only tearing down: exit 0 as finished
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # a process started in the background by a non-interactive shell inherits an
    # ignored SIGINT; a run must still stop cleanly on Ctrl-C / the dashboard's cancel
    signal.signal(signal.SIGINT, handler)


def _check_id(kind: str, value: str) -> bool:
    """One line and False for an id that is not one safe path component."""
    from tui_ft.core.common.paths import UnsafeName, safe_component

    try:
        safe_component(kind, value)
    except UnsafeName as exc:
        _err(f"error: {exc}")
        return False
    return True


def load_and_check(path: str):
    """Load a preset or plan and check its files; print the problems and return None on error."""
    from tui_ft.core.config.checks import load_and_check as check

    return check(path, _err)


def cmd_run(path: str, *, run_id: str | None = None, plain: bool = False, jobs: int = 1, gpus: str | None = None,
            executor: str | None = None) -> int:
    _FINISHED.clear()
    if run_id is not None and not _check_id("run id", run_id):
        return EXIT_USAGE
    loaded = load_and_check(path)
    if loaded is None:
        return EXIT_USAGE
    from tui_ft.core.config.presets import Preset

    _install_sigterm()
    if isinstance(loaded, Preset) and loaded.sweep is not None:
        from tui_ft.core.orchestrate.sweep import cmd_sweep_run

        return cmd_sweep_run(loaded, jobs=jobs, gpus=gpus, executor=executor, err=_err)
    if isinstance(loaded, Preset) and loaded.ensemble is not None:
        from tui_ft.core.orchestrate import ensemble

        return ensemble.run(path, jobs=jobs if jobs != 1 else None, gpus=gpus, executor=executor or "local", say=_err)
    if gpus or executor:
        _err("error: --gpus and --executor go with a [sweep] or [ensemble] preset (or tui-ft matbench / ensemble)")
        return EXIT_USAGE
    if isinstance(loaded, Preset):
        return _run_preset(loaded, run_id=run_id, plain=plain)
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):  # torchrun (no torch import here)
        _err(f"{path}: a plan cannot run under torchrun (DDP runs one preset); run its stages' presets one by one")
        return EXIT_USAGE
    from tui_ft.core.orchestrate.plan_runner import run_plan

    printer = make_printer(plain)
    try:
        status = run_plan(loaded, emit_factory=printer.writer_for, say=_err, on_batch=printer.on_batch)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        printer.close()
    return _exit_for(status)


def _exit_for(status: str) -> int:
    return {"finished": EXIT_OK, "pruned": EXIT_OK, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_FAILED)


def _run_preset(preset, *, run_id: str | None, plain: bool, resume: bool = False) -> int:
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.library.runs import new_run_id

    import tui_ft.core.train.engine  # noqa: F401 - the slow import (torch, chgnet) before the run folder exists
    from tui_ft.core.train import distributed

    try:  # under torchrun: join the process group (DDP); one process otherwise
        dist = distributed.setup(preset)
    except ValueError as exc:
        _err(f"{preset.path or preset.name}: {exc}")
        return EXIT_USAGE
    paths = Paths.default()
    if run_id is None:  # DDP: rank 0 allocates the id, the others take it
        run_id = dist.broadcast(new_run_id(preset.name, paths) if dist.writer else None)
    elif dist.writer:
        (paths.logs / run_id).mkdir(parents=True, exist_ok=True)
    _FINISHED.clear()
    printer = make_printer(plain or not dist.writer)
    show = printer.writer_for(run_id)

    def emit(ev) -> None:
        from tui_ft.core.common.events import RunFinished

        if isinstance(ev, RunFinished):
            _FINISHED.append(ev.run_id)
        show(ev)

    result = None
    try:
        from tui_ft.core.train.errors import RunRefused
        from tui_ft.core.train.engine import run_training

        try:
            result = run_training(
                preset, run_id=run_id, paths=paths, emit=emit, resume=resume, on_batch=printer.on_batch, dist=dist
            )
        except RunRefused as exc:  # locked by a live process, finished, nothing to resume: nothing written
            _err(str(exc))
            return EXIT_USAGE
        except KeyboardInterrupt:  # interrupted outside the training loop
            if _FINISHED:
                return EXIT_OK
            from tui_ft.core.common.events import EventWriter, RunInterrupted

            if not dist.writer:
                return EXIT_INTERRUPTED
            with EventWriter(paths.run_log_dir(run_id) / "events.jsonl", echo=emit) as w:
                w.emit(RunInterrupted(run_id, message="interrupted before training started"))
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - already recorded as run_failed
            if not printer.failed_shown:  # say it once: the run_failed line already named the error
                _err(f"error: {type(exc).__name__}: {exc}")
            return EXIT_FAILED
    finally:
        printer.close()
        dist.close(together=result is not None and result.status == "finished")
    return _exit_for(result.status)


def cmd_resume(run_id: str, *, plain: bool = False) -> int:
    from tui_ft.core.train.engine import load_run_preset
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.fields import PresetError, PresetErrors

    if not _check_id("run id", run_id):
        return EXIT_USAGE
    from tui_ft.core.train.errors import RunRefused
    from tui_ft.core.train.engine import check_resumable

    paths = Paths.default()
    try:
        check_resumable(paths, run_id)  # checked again under the run's lock
    except RunRefused as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        preset = load_run_preset(paths, run_id)
    except (PresetError, PresetErrors) as exc:
        _err(str(exc))
        return EXIT_USAGE
    _install_sigterm()
    return _run_preset(preset, run_id=run_id, plain=plain, resume=True)


# ---------------------------------------------------------------- library commands


def _fmt(x, spec=".4f") -> str:
    return "-" if x is None else format(x, spec)


def cmd_runs(where: str | None = None) -> int:
    from tui_ft.core.common.paths import Paths, describe_root

    from tui_ft.commands_io import filtered_runs

    _err(describe_root())
    paths = Paths.default()
    runs = filtered_runs(where, paths)
    if runs is None:
        return EXIT_USAGE
    if not runs:
        print(f"no runs under {paths.logs}" + (f" match {where!r}" if where else ""))
        return EXIT_OK
    from tui_ft.core.common.metrics import headline

    # a potential's cells: its force (else energy) MAE with the unit, not the weighted loss
    rows = [(s, headline(s.best_metrics(), "val") or _fmt(s.best_val_mae), headline(s.test_metrics, "test")
             or _fmt(s.test_mae)) for s in runs]
    wv, wt = max([9] + [len(v) for _, v, _ in rows]), max([8] + [len(t) for _, _, t in rows])
    print(f"{'run':40} {'preset':22} {'status':11} {'epoch':>5} {'best_val':>{wv}} {'test':>{wt}} {'device':>6}")
    for s, val, test in rows:
        ep = "-" if s.epoch is None else str(s.epoch)
        print(f"{s.run_id:40} {s.preset_name:22} {s.status:11} {ep:>5} {val:>{wv}} {test:>{wt}} {s.device:>6}")
    return EXIT_OK


def cmd_checkpoints(preset: str | None) -> int:
    from tui_ft.core.library.checkpoints import Library

    items = Library().filter(preset=preset)
    if not items:
        print("no checkpoints under checkpoints/")
        return EXIT_OK
    from tui_ft.core.common.metrics import headline
    from tui_ft.core.library.runs import list_runs

    runs = {s.run_id: s for s in list_runs(warn=_err)}
    rows = []
    for c in items:  # a potential's cells: its force (else energy) MAE with the unit, not the weighted loss
        s = runs.get(c.run_id)
        val = headline(c.val_metrics(s), "val")
        test = headline(s.test_metrics, "test") if s is not None else None
        rows.append((c, val or _fmt(c.val_mae), test or _fmt(c.test_mae)))
    wv, wt = max([8] + [len(v) for _, v, _ in rows]), max([8] + [len(t) for _, _, t in rows])
    print(f"{'checkpoint':46} {'preset':22} {'epoch':>5} {'val_mae':>{wv}} {'test':>{wt}}  parent")
    for c, val, test in rows:
        print(f"{c.ref:46} {c.preset_name:22} {_fmt(c.epoch, 'd'):>5} {val:>{wv}} {test:>{wt}}  {c.parent or '-'}")
    return EXIT_OK


def cmd_fetch(name: str, dest: str | None) -> int:
    from pathlib import Path

    from tui_ft.core.data.fetch import FetchError, fetch_matbench

    try:
        path = fetch_matbench(name, Path(dest) if dest else None, progress=_fetch_progress())
    except ValueError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except FetchError as exc:
        from tui_ft.core.common.paths import Paths, matbench_file

        where = Path(dest) / f"{name}.json.gz" if dest else matbench_file(name, Paths.default())
        _err(f"error: {exc}")
        _err(
            f"without network: download {name}.json.gz elsewhere (the URL above) and copy it to {where.resolve()}; "
            f"then use source = \"{name}\" in the preset"
        )
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


def cmd_dashboard(bell: bool = False) -> int:
    from tui_ft.tui.app import TuiFtApp

    app = TuiFtApp(bell=bell)
    app.run()
    return app.return_code or EXIT_OK  # a crash is not a success (Textual sets 1)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
