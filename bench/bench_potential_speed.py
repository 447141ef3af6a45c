"""Speed of a potential (``efs``) epoch: tui-ft against chgnet's own ``Trainer(targets="efs")``
on the same frames, same batch size, same loss (Huber 0.1, weights 1 / 1 / 0.1), same CPU
threads, one process, side by side; then peak memory (RSS) against atoms per batch.

    python bench/bench_potential_speed.py [--element Si] [--fraction 0.25] [--epochs 2] [--head]

Reads ``../shared/data/mlearn/<El>_training.json.gz`` (real DFT; not part of this project,
BSD-3, see its README). The frames of the split are the ones tui-ft's engine picks
(``make_source_splits`` with the run's arguments), handed to chgnet's ``StructureData`` with
stresses back in VASP's form (kbar, positive = compressive), as chgnet expects.
Prints seconds per epoch (training + validation pass) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# as the engine does (tui_ft.core.train.engine): OpenMP threads that spin make training several times
# slower when anything else shares the cores; libgomp reads this when torch is first imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MLEARN = (REPO.parent / "shared" / "data" / "mlearn").resolve()


def chgnet_epochs(train, val, *, epochs: int, batch_size: int, lr: float) -> list[float]:
    """Seconds per epoch of chgnet's Trainer (training loop + its validation pass)."""
    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer

    def data(frames):
        return StructureData(
            structures=[f.structure for f in frames], energies=[f.energy_per_atom for f in frames],
            forces=[f.forces for f in frames], stresses=[-10.0 * f.stress for f in frames],  # GPa ASE -> kbar VASP
        )

    loader = lambda fr, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        data(fr), batch_size=batch_size, shuffle=shuffle, collate_fn=collate_graphs, num_workers=0)
    model = CHGNet.load(verbose=False)
    times = []
    trainer = Trainer(model=model, targets="efs", energy_loss_ratio=1, force_loss_ratio=1, stress_loss_ratio=0.1,
                      optimizer="Adam", scheduler="CosLR", criterion="Huber", delta=0.1, epochs=1,
                      learning_rate=lr, use_device="cpu", print_freq=10**6)
    tl, vl = loader(train, True), loader(val, False)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(epochs):  # one epoch per call: its wall time is the epoch's
            t0 = time.perf_counter()
            trainer.train(tl, vl, test_loader=None, save_dir=tmp, save_test_result=False,
                          train_composition_model=False)
            times.append(time.perf_counter() - t0)
    return times


def tuift_epochs(preset_path: Path, changes: dict, work: Path) -> tuple[list[float], float]:
    """Seconds per epoch (training + validation) of tui-ft's engine, and the whole run's wall time."""
    os.environ["TUI_FT_HOME"] = str(work)
    from tui_ft.core.common.events import EpochEnd, read_events
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.library.runs import new_run_id
    from tui_ft.core.train.engine import run_training

    (work / "presets").mkdir(parents=True, exist_ok=True)
    preset = load_preset(preset_path).with_changes(changes)
    paths = Paths(work)
    run_id = new_run_id(preset.name, paths)
    t0 = time.perf_counter()
    res = run_training(preset, run_id=run_id, paths=paths, emit=lambda ev: None)
    wall = time.perf_counter() - t0
    if res.status != "finished":
        raise SystemExit(f"tui-ft run {run_id}: {res.status} {res.message}")
    ev = [e for e in read_events(paths.run_log_dir(run_id) / "events.jsonl") if isinstance(e, EpochEnd)]
    return [e.seconds for e in ev if e.epoch >= 1], wall


MEM_PROBE = r"""
import sys, torch
from ase.build import bulk
from chgnet.model import CHGNet
from pymatgen.io.ase import AseAtomsAdaptor
from tui_ft.core.train.forward import potential_forward

def status(key):  # MiB, from /proc/self/status (VmRSS now, VmHWM the peak since the last reset)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
n_atoms = int(sys.argv[1])
model = CHGNet.load(verbose=False)
opt = torch.optim.Adam(model.parameters(), 1e-5)
cells = []
while sum(len(c) for c in cells) < n_atoms:  # 64-atom rattled diamond Si cells
    a = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    a.rattle(0.05, seed=len(cells))
    cells.append(AseAtomsAdaptor.get_structure(a))
graphs = [model.graph_converter(s) for s in cells]
with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the RSS now (Linux)
    fh.write("5")
base = status("VmRSS")
out = potential_forward(model, graphs, "efs", create_graph=True)
loss = out["e"].pow(2).sum() + sum(f.pow(2).sum() for f in out["f"]) + sum(s.pow(2).sum() for s in out["s"])
loss.backward()
opt.step()
peak = status("VmHWM")
print(f"{sum(len(c) for c in cells)} {base:.0f} {peak:.0f} {peak - base:.0f}")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--element", default="Si", choices=("Si", "Mo"))
    ap.add_argument("--fraction", type=float, default=0.25, help="share of the training frames used")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--head", action="store_true", help="also time a head-mode tui-ft epoch (backbone frozen)")
    ap.add_argument("--memory", default="64,128,256,512,1024", help="atoms per batch for the memory probe ('' skips)")
    ap.add_argument("--memory-only", action="store_true", help="only the memory probe (no epochs)")
    args = ap.parse_args()
    train_file, test_file = MLEARN / f"{args.element}_training.json.gz", MLEARN / f"{args.element}_test.json.gz"
    if not train_file.is_file():
        print(f"error: {train_file} not found (the mlearn data lies in ../shared/data/mlearn/)", file=sys.stderr)
        return 2
    if args.memory_only:
        return memory_probe(args.memory)
    import torch

    from tui_ft.core.data.frames import load_frames
    from tui_ft.core.data.sources import make_source_splits

    frames = list(load_frames(train_file).frames)
    test = list(load_frames(test_file).frames)[:2]
    val_fraction, seed = 0.1, 0
    s = make_source_splits(len(frames) + len(test), n_held_out=len(test), split="random", fraction=args.fraction,
                           val_fraction=val_fraction, seed=seed)
    train, val = [frames[int(r)] for r in s.train], [frames[int(r)] for r in s.val]
    atoms = lambda fr: sum(len(f.structure) for f in fr)  # noqa: E731
    print(f"{args.element}: {len(train)} training frames ({atoms(train)} atoms), {len(val)} validation frames "
          f"({atoms(val)} atoms); batch {args.batch_size}; torch threads {torch.get_num_threads()}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    changes = {"data.source": str(train_file), "data.test_source": str(test_file), "data.test_limit": 2,
               "data.fraction": args.fraction, "data.val_fraction": val_fraction, "data.seed": seed,
               "train.epochs": args.epochs, "train.batch_size": args.batch_size, "optim.lr": args.lr,
               "task.energy_weight": 1.0, "task.force_weight": 1.0, "task.stress_weight": 0.1,
               "finetune.refit_atomref": False, "run.name": "speed"}
    with tempfile.TemporaryDirectory() as tmp:
        ours, wall = tuift_epochs(REPO / "presets" / "mlearn_si.toml", changes, Path(tmp))
    head = None
    if args.head:
        with tempfile.TemporaryDirectory() as tmp:
            head, _ = tuift_epochs(REPO / "presets" / "mlearn_si.toml", {**changes, "finetune.mode": "head"}, Path(tmp))
    theirs = chgnet_epochs(train, val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    print(f"{'epoch':>5} {'chgnet Trainer s':>17} {'tui-ft s':>9} {'ratio':>6}")
    for k, (a, b) in enumerate(zip(theirs, ours), 1):
        print(f"{k:>5} {a:>17.1f} {b:>9.1f} {a / b:>6.2f}")
    mean_a, mean_b = sum(theirs) / len(theirs), sum(ours) / len(ours)
    print(f"mean  {mean_a:>17.1f} {mean_b:>9.1f} {mean_a / mean_b:>6.2f}   (tui-ft's whole run incl. graph "
          f"building, AtomRef-less epoch 0 and a 2-frame test: {wall:.1f} s)")
    if head:
        print(f"head mode (readout + AtomRef trained, backbone frozen but run every batch): "
              f"{sum(head) / len(head):.1f} s per epoch, {mean_b / (sum(head) / len(head)):.2f}x the speed of full mode")
    if args.memory:
        memory_probe(args.memory)
    print(json.dumps({"chgnet_s": theirs, "tuift_s": ours, "tuift_head_s": head, "ratio": mean_a / mean_b}))
    return 0


def memory_probe(sizes: str) -> int:
    """Peak RSS of one efs training step (forward with the graph, backward, Adam step) per batch
    size, each in a fresh process, the peak reset just before the step (``/proc/self/clear_refs``)."""
    print("\npeak RSS of one efs training step (64-atom Si cells; CPU), each in a fresh process:")
    print(f"{'atoms/batch':>11} {'RSS before MiB':>15} {'peak MiB':>9} {'step adds MiB':>14}")
    for n in [int(x) for x in sizes.split(",") if x]:
        out = subprocess.run([sys.executable, "-c", MEM_PROBE, str(n)], capture_output=True, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        last = out.stdout.strip().splitlines()[-1].split() if out.returncode == 0 and out.stdout.strip() else []
        if len(last) == 4:
            print(f"{last[0]:>11} {last[1]:>15} {last[2]:>9} {last[3]:>14}", flush=True)
        else:
            print(f"{n:>11} probe failed: {out.stderr.strip()[-300:]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
