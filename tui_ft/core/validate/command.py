"""``tui-ft validate``: its options (``add_arguments``) and its body (``main``). Nothing heavy is imported
until ``main`` runs, so ``tui-ft --help`` stays fast."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tui_ft.core.validate import CHECKS

    p.add_argument("checkpoint", help="a .pt path or a reference such as run1@best or PRESET@best")
    p.add_argument("--data", help="frames to take structures and test rows from (default: the checkpoint's own data source)")
    p.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, any of {','.join(CHECKS)} (default: all)")
    p.add_argument("--against", default="pretrained",
                   help="pretrained (chgnet's CHGNet.load(), default), none, or another checkpoint reference")
    p.add_argument("--structures", nargs="+", default=(), metavar="FILE", help="structure files to relax and run instead of the data's")
    p.add_argument("--reference", nargs="+", default=(), metavar="FILE",
                   help="structure files for the drift check (default: a built-in sample of 8 ASE-built crystals)")
    p.add_argument("--out", help="results folder (default: logs/RUN/validate-KIND/ beside the run)")
    p.add_argument("--max-structures", type=int, default=2, help="structures to relax / fit (default 2)")
    p.add_argument("--relax-steps", type=int, default=300, help="optimizer steps per relaxation (default 300)")
    p.add_argument("--fmax", type=float, default=0.05, help="relaxation force criterion, eV/Å (default 0.05)")
    p.add_argument("--eos-points", type=int, default=9, help="volumes on the EOS (default 9)")
    p.add_argument("--eos-span", type=float, default=0.06, help="relative volume range each side (default 0.06 = ±6 %%)")
    p.add_argument("--temperature", type=float, default=300.0, dest="md_temperature", help="MD temperature, K (default 300)")
    p.add_argument("--md-steps", type=int, default=400, help="NVT steps (default 400)")
    p.add_argument("--nve-steps", type=int, default=200, dest="md_nve_steps", help="NVE steps after the NVT run (default 200; 0: none)")
    p.add_argument("--timestep", type=float, default=1.0, dest="md_timestep", help="MD time step, fs (default 1)")
    p.add_argument("--md-atoms", type=int, default=32, help="the MD cell is repeated to at least this many atoms (default 32)")
    p.add_argument("--max-frames", type=int, default=200, help="test frames scored at most (default 200)")
    p.add_argument("--batch-size", type=int, default=16, help="structures per forward pass (default 16)")
    p.add_argument("--check-seconds", type=float, default=900.0, help="time bound of each check, s (default 900)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MD velocities (default 0)")


def main(args: argparse.Namespace, *, err=None) -> int:
    """Run the validation; the summary (markdown) on stdout, progress on stderr. Exit 0/1/2 (runner.py)."""
    from tui_ft.core.validate.models import ValidateInputError
    from tui_ft.core.validate.runner import (
        EXIT_USAGE,
        Options,
        parse_checks,
        run_validate,
    )
    from tui_ft.core.validate.summary import markdown

    err = err or (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        opts = Options(checks=parse_checks(args.checks), data=args.data, structures=tuple(args.structures),
                       reference=tuple(args.reference), against=args.against, out=args.out,
                       max_structures=args.max_structures, relax_steps=args.relax_steps, fmax=args.fmax,
                       eos_points=args.eos_points, eos_span=args.eos_span, md_temperature=args.md_temperature,
                       md_steps=args.md_steps, md_nve_steps=args.md_nve_steps, md_timestep=args.md_timestep,
                       md_atoms=args.md_atoms, max_frames=args.max_frames, batch_size=args.batch_size,
                       check_seconds=args.check_seconds, seed=args.seed)
        rc, results, out = run_validate(args.checkpoint, opts, say=err)
    except ValidateInputError as exc:
        err(str(exc))
        return EXIT_USAGE
    print(markdown(results), end="")
    err(f"results: {out / 'results.json'} (numbers), {out / 'summary.md'} (this summary), {out / 'events.jsonl'}")
    return rc
