#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA-only tests, one DDP run across the GPUs
# (when there are two or more), and fp32 / bf16 / fp16 speed, MAE and peak memory.
# Run from anywhere:  bash bench/gpu_check.sh   (DATA=path/to/mp_e_form_dev.json.gz, N=2000)
# Put the printed numbers in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mp_e_form_dev.json.gz}
N=${N:-2000}
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: gpu_check.sh needs a GPU"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
echo "== tests marked cuda"
python -m pytest -q -p no:cacheprovider -m cuda tests/
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  echo "== DDP (nccl) on $NGPU GPUs against one GPU, demo preset"
  export TUI_FT_HOME=$(mktemp -d)
  cp -r presets "$TUI_FT_HOME/"
  (cd "$TUI_FT_HOME" && python -m tui_ft --preset presets/demo.toml --plain --run-id gpu-one \
     && python -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m tui_ft --preset presets/demo.toml --plain --run-id gpu-ddp) \
     | grep -E "test_mae|epoch"
  unset TUI_FT_HOME
fi
echo "== precision: fp32 / bf16 / fp16 on cuda:0 (dev data, N=$N)"
python bench/bench_precision.py --device cuda:0 --n "$N" --data "$DATA"
echo "== epoch throughput on cuda:0: tui-ft's engine against chgnet's Trainer (head and full)"
TUI_FT_BENCH_DEVICE=cuda:0 python bench/bench_throughput.py --modes head,full --n "$N" --rounds 3 --no-model --data "$DATA"
