"""Many runs: two-stage plans and their runner, Matbench studies, Optuna sweeps,
and the executors (local processes, torchrun, Slurm through submitit)."""
