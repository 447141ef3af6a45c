"""One training run: the engine's steps and epochs, forward modes, CPU parallelism,
precision, DDP, and the optional metric loggers."""

import os
import sys

# OpenMP worker threads that spin while they wait for work make CPU training several
# times slower as soon as another process shares the cores (bench/bench_throughput.py,
# BENCHMARKS.md); waiting passively costs nothing measurable. libgomp reads this when
# torch is first imported, so it only applies if that is still to come: it stands
# in the package, before any module of it loads torch.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
