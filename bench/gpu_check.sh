#!/usr/bin/env bash
# One prepared check for a machine with NVIDIA GPUs (issue 16). Run from the repository root:
#
#     bash bench/gpu_check.sh [DATA_FILE]        # DATA_FILE: a Matbench-layout file (default: the dev file)
#
# 1. what the machine has (nvidia-smi, torch's view of CUDA);
# 2. the tests that need CUDA (pytest marker `cuda`; skipped on machines without one);
# 3. `tui-ft matbench` on the demo data with one fold per GPU (--gpus), wall time;
# 4. head/full epoch throughput against chgnet's Trainer on the GPU (bench/bench_throughput.py, when it
#    takes --device; until then it says so);
# 5. bf16 vs fp32: speed and test MAE of one head and one full run on the data file (when presets
#    have train.precision; until then it says so).
#
# Everything runs in a scratch project (TUI_FT_HOME) under $OUT or /tmp, so the library is not touched.
# Prints a summary block to paste into BENCHMARKS.md. Each step is bounded by `timeout`.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
DATA=${1:-${ROOT}/../shared/data/mp_e_form_dev.json.gz}
WORK=${OUT:-/tmp}/gpu_check.$$
mkdir -p "$WORK"
export TUI_FT_HOME="$WORK/project" TUI_FT_CACHE="$WORK/cache" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$TUI_FT_HOME"
cp -r "$ROOT/presets" "$TUI_FT_HOME/"
SUMMARY="$WORK/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

echo "== 1. machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || echo "nvidia-smi not found"
$PY - <<'EOF' | tee -a "$SUMMARY"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}, "
      f"devices {torch.cuda.device_count()}, bf16 {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}")
for i in range(torch.cuda.device_count()):
    print(f"  cuda:{i} {torch.cuda.get_device_name(i)}")
EOF
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" = "0" ]; then
    say "no CUDA device: nothing to check here"
    exit 0
fi

echo "== 2. tests marked cuda"
timeout 900 $PY -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tail -15
say "cuda tests: exit ${PIPESTATUS[0]}"

echo "== 3. tui-ft matbench, one fold per GPU"
GPUS=$($PY -c "print(','.join(str(i) for i in range(min(5, $NGPU))))")
sed -e 's/device = "cpu"/device = "cuda"/' "$TUI_FT_HOME/presets/demo.toml" > "$TUI_FT_HOME/presets/demo_gpu.toml"
T0=$SECONDS
( cd "$TUI_FT_HOME" && timeout 900 $PY -m tui_ft matbench presets/demo_gpu.toml --folds 0-4 --gpus "$GPUS" --name gpucheck ) 2>&1 | tail -12
say "matbench demo, 5 folds on GPUs $GPUS: exit ${PIPESTATUS[0]}, wall $((SECONDS - T0)) s"

echo "== 4. epoch throughput vs chgnet's Trainer"
if grep -q -- '"--device"' bench/bench_throughput.py; then
    if [ -f "$DATA" ]; then
        timeout 1200 $PY bench/bench_throughput.py --device cuda --data "$DATA" --n 2000 --rounds 3 2>&1 | tee -a "$SUMMARY" | tail -30
    else
        say "throughput: data file $DATA not found"
    fi
else
    say "throughput: bench/bench_throughput.py has no --device option yet (GPU readiness work): GPU numbers still open"
fi

echo "== 5. bf16 vs fp32"
if [ ! -f "$DATA" ]; then
    say "precision: data file $DATA not found"
    exit 0
fi
timeout 1800 $PY - "$DATA" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import subprocess, sys, time
from pathlib import Path
from tui_ft.core.events import RunFinished, read_events
from tui_ft.core.paths import Paths
from tui_ft.core.presets import TrainCfg, load_preset, save_preset

if "precision" not in TrainCfg.model_fields:
    print("precision: presets have no train.precision yet (GPU readiness work): bf16 numbers still open")
    raise SystemExit(0)
data = sys.argv[1]
paths = Paths.default()
for mode, base in (("head", "head_finetune_freeze.toml"), ("full", "full_finetune.toml")):
    for prec in ("fp32", "bf16"):
        p = load_preset(paths.presets / base).with_changes({
            "run.name": f"gpucheck-{mode}-{prec}", "data.source": data, "data.fraction": 0.5,
            "train.device": "cuda", "train.precision": prec, "train.epochs": 3, "train.batch_size": 64,
        })
        f = paths.presets / f"gpucheck-{mode}-{prec}.toml"
        save_preset(p, f)
        t = time.time()
        r = subprocess.run([sys.executable, "-m", "tui_ft", "--preset", str(f), "--plain"], capture_output=True, text=True)
        wall = time.time() - t
        runs = sorted(paths.logs.glob(f"gpucheck-{mode}-{prec}-*"))
        fin = [e for e in read_events(runs[-1] / "events.jsonl") if isinstance(e, RunFinished)] if runs else []
        mae = f"{fin[-1].test_mae:.4f}" if fin and fin[-1].test_mae is not None else "n/a"
        print(f"precision: {mode} {prec}: exit {r.returncode}, wall {wall:.1f} s, test MAE {mae}")
EOF

echo
echo "== summary (for BENCHMARKS.md)"
cat "$SUMMARY"
