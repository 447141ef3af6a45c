"""One training run: the engine's steps and epochs, forward modes, CPU parallelism,
precision, DDP, and the optional metric loggers."""

import os
import sys

# OpenMP worker threads that spin while they wait for work make CPU training several
# times slower as soon as another process shares the cores (bench/bench_throughput.py,
# BENCHMARKS.md), so they wait passively. libgomp reads these variables when torch is
# first imported, so they only apply if that is still to come: they stand in the
# package, before any module of it loads torch.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # ... but sleeping at once between the thousands of small operations of a batch costs more in
    # wake-ups than it saves (a batch-1 potential epoch twice as slow alone; BENCHMARKS.md, 10e):
    # libgomp spins this many rounds (some 30 µs) first. Only where
    # tui_ft.core.train.setup.CpuThreads may adjust the thread count (no thread variable set), since
    # it is what drops to one thread, which never waits, when another process wants the cores.
    if sys.platform.startswith("linux") and not any(
            os.environ.get(v, "").strip() for v in ("TUI_FT_THREADS", "OMP_NUM_THREADS")):
        os.environ.setdefault("GOMP_SPINCOUNT", "3000")
