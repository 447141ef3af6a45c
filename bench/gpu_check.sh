#!/usr/bin/env bash
# One prepared check for a machine with NVIDIA GPUs (issue 16). Run from the repository root:
#
#     bash bench/gpu_check.sh [DATA_FILE]        # DATA_FILE: a Matbench-layout file (default: the dev file)
#
# 1. what the machine has (nvidia-smi, torch's view of CUDA);
# 2. the tests that need CUDA (pytest marker `cuda`; skipped on machines without one);
# 3. `tui-ft matbench` on the demo data with one fold per GPU (--gpus), wall time;
# 4. one DDP run across the GPUs (torchrun, nccl) against one GPU, when there are two or more;
# 5. fp32 / bf16 / fp16 speed, MAE and peak memory (bench/bench_precision.py);
# 6. head/full epoch throughput against chgnet's Trainer on the GPU (bench/bench_throughput.py).
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

echo "== 4. DDP (nccl) across the GPUs against one GPU, demo preset"
if [ "$NGPU" -ge 2 ]; then
    ( cd "$TUI_FT_HOME" && timeout 900 $PY -m tui_ft --preset presets/demo_gpu.toml --plain --run-id gpu-one \
      && timeout 900 $PY -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m tui_ft \
         --preset presets/demo_gpu.toml --plain --run-id gpu-ddp ) 2>&1 | grep -E "test_mae|epoch" | tee -a "$SUMMARY"
else
    say "DDP: one GPU only, skipped"
fi

if [ ! -f "$DATA" ]; then
    say "data file $DATA not found: throughput and precision skipped"
    exit 0
fi
echo "== 5. precision: fp32 / bf16 / fp16 on cuda:0 (speed, MAE, peak memory)"
timeout 1800 $PY bench/bench_precision.py --device cuda:0 --n 2000 --data "$DATA" 2>&1 | tee -a "$SUMMARY" | tail -20

echo "== 6. epoch throughput on cuda:0: tui-ft's engine against chgnet's Trainer (head and full)"
TUI_FT_BENCH_DEVICE=cuda:0 timeout 1800 $PY bench/bench_throughput.py --modes head,full --n 2000 --rounds 3 --no-model \
    --data "$DATA" 2>&1 | tee -a "$SUMMARY" | tail -30

echo
echo "== summary (for BENCHMARKS.md)"
cat "$SUMMARY"
