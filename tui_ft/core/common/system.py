"""What the machine is doing: CPU load and memory, and per training process its CPU %, RSS
and GPU use (the dashboard's system pane; no Textual here).

CPU and memory come from psutil. GPUs come from NVML through ``nvidia-ml-py`` (the optional
extra ``tui-ft[gpu]``, imported as ``pynvml``); without it, or without an NVIDIA driver, the
sample says so in ``gpu_note`` and carries no GPU numbers. :class:`SystemSampler` keeps the
psutil handles between samples (a process's CPU % is measured between two looks) and is
meant to be called from a worker thread every couple of seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

GiB = 1 << 30
MiB = 1 << 20


@dataclass
class ProcSample:
    run_id: str
    pid: int
    cpu_percent: float | None  # of one core (200 = two cores busy); None on the first look
    rss_bytes: int | None
    gpu_mem_bytes: int | None = None  # what NVML says the process holds on its GPUs
    alive: bool = True


@dataclass
class GpuSample:
    index: int
    name: str
    util_percent: int | None
    mem_used_bytes: int
    mem_total_bytes: int


@dataclass
class SystemSample:
    cpu_percent: float  # of the whole machine (100 = every core busy)
    n_cpus: int
    load1: float | None
    mem_used_bytes: int
    mem_total_bytes: int
    procs: list[ProcSample] = field(default_factory=list)
    gpus: list[GpuSample] = field(default_factory=list)
    gpu_note: str = ""  # why there are no GPU numbers ("" when there are)

    def lines(self) -> list[str]:
        """The sample as two lines of text, units on every number: the machine (CPU, memory,
        GPUs), then the training processes (the pane keeps a fixed height)."""
        load = f", load {self.load1:.2f}" if self.load1 is not None else ""
        machine = (f"CPU {self.cpu_percent:3.0f}% of {self.n_cpus} cores{load} · memory "
                   f"{self.mem_used_bytes / GiB:.1f} / {self.mem_total_bytes / GiB:.1f} GiB · ")
        if self.gpus:
            machine += " · ".join(
                f"GPU {g.index} {g.name}: {'-' if g.util_percent is None else f'{g.util_percent}%'} busy, "
                f"{g.mem_used_bytes / GiB:.1f} / {g.mem_total_bytes / GiB:.1f} GiB" for g in self.gpus)
        else:
            machine += f"GPU: {self.gpu_note or 'none'}"
        procs = []
        for p in self.procs:
            if not p.alive:
                continue
            cpu = "-" if p.cpu_percent is None else f"{p.cpu_percent:.0f}%"
            rss = "-" if p.rss_bytes is None else f"{p.rss_bytes / MiB:.0f} MiB"
            gpu = "" if p.gpu_mem_bytes is None else f", GPU {p.gpu_mem_bytes / MiB:.0f} MiB"
            procs.append(f"{p.run_id} (pid {p.pid}): CPU {cpu}, RSS {rss}{gpu}")
        return [machine, "training: " + (" · ".join(procs) if procs else "no run of this project is training")]


class _Nvml:
    """NVML through pynvml (nvidia-ml-py), or why it is not there."""

    def __init__(self) -> None:
        self.nv = None
        self.note = ""
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            self.note = "no NVIDIA GPU numbers (nvidia-ml-py is not installed: pip install 'tui-ft[gpu]')"
            return
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - no driver, no device: said plainly
            self.note = f"none found (NVML: {exc})"
            return
        self.nv = pynvml

    def sample(self) -> tuple[list[GpuSample], dict[int, int]]:
        nv = self.nv
        gpus: list[GpuSample] = []
        per_pid: dict[int, int] = {}
        if nv is None:
            return gpus, per_pid
        try:
            n = nv.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001
            self.note = f"NVML: {exc}"
            return gpus, per_pid
        for i in range(n):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = nv.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                try:
                    util = int(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:  # noqa: BLE001 - some devices do not report it
                    util = None
                gpus.append(GpuSample(i, name, util, int(mem.used), int(mem.total)))
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h) or []:
                    used = getattr(p, "usedGpuMemory", None)
                    if isinstance(used, int):
                        per_pid[int(p.pid)] = per_pid.get(int(p.pid), 0) + used
            except Exception:  # noqa: BLE001 - one device that does not answer does not hide the others
                continue
        if not gpus and not self.note:
            self.note = "none found (NVML sees no device)"
        return gpus, per_pid


class SystemSampler:
    """Samples the machine and the given training processes (:meth:`sample`)."""

    def __init__(self) -> None:
        import psutil

        self.ps = psutil
        self._procs: dict[int, object] = {}
        self._nvml: _Nvml | None = None
        psutil.cpu_percent(None)  # the first call starts the interval

    def sample(self, runs: dict[str, int]) -> SystemSample:
        """``runs``: run id -> pid of the processes to look at (dead ones are reported as gone)."""
        ps = self.ps
        if self._nvml is None:
            self._nvml = _Nvml()
        vm = ps.virtual_memory()
        try:
            load1 = os.getloadavg()[0]
        except OSError:
            load1 = None
        out = SystemSample(ps.cpu_percent(None), ps.cpu_count() or 1, load1, int(vm.total - vm.available), int(vm.total))
        out.gpus, per_pid = self._nvml.sample()
        out.gpu_note = self._nvml.note if not out.gpus else ""
        seen = set()
        for run_id, pid in sorted(runs.items()):
            if not pid:
                continue
            seen.add(pid)
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = ps.Process(pid)
                    cpu = None
                    proc.cpu_percent(None)  # type: ignore[attr-defined]
                else:
                    cpu = proc.cpu_percent(None)  # type: ignore[attr-defined]
                rss = int(proc.memory_info().rss)  # type: ignore[attr-defined]
                out.procs.append(ProcSample(run_id, pid, cpu, rss, per_pid.get(pid)))
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                self._procs.pop(pid, None)
                out.procs.append(ProcSample(run_id, pid, None, None, alive=False))
        for pid in set(self._procs) - seen:
            self._procs.pop(pid, None)
        return out
