"""Probe this machine and describe it in coarse bands (`fedai.profile.bands`).

What is read: the logical cores this process may use, total RAM (capped by a cgroup limit), free disk space
where the node keeps its data, the CPU model name (reduced to vendor + family), OS family and architecture,
and, when `nvidia-smi` exists, each GPU's name (reduced to its vendor) and memory. What is never read or
sent: serial numbers, hostnames, MAC or IP addresses, user names, exact sizes.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedai.profile import bands
from fedai.protocol.messages import HardwareProfile

NVIDIA_SMI_TIMEOUT_S = 5.0
NVIDIA_SMI_QUERY = ("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")


@dataclass(frozen=True, slots=True)
class Gpu:
    vendor: str
    memory_mib: int


def _psutil() -> Any:
    """psutil when installed (a fallback for platforms without /proc or sysconf), else None."""
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


def logical_cores() -> int:
    """Logical cores this process may run on (its affinity mask, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cgroup_memory_limit() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def total_ram() -> int:
    """Physical RAM in bytes, or the cgroup's memory limit when that is lower; 0 if unknown."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ps = _psutil()
        if ps is not None:
            total = int(ps.virtual_memory().total)
    limit = _cgroup_memory_limit()
    return min(total, limit) if limit and total else total


def free_disk(data_dir: Path) -> int:
    """Free bytes on the filesystem holding `data_dir` (or its nearest existing parent)."""
    path = data_dir.expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def parse_cpuinfo(text: str) -> tuple[str, str]:
    """(model name, vendor) from /proc/cpuinfo text; ARM boards often name only the implementer."""
    model = vendor = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "cpu implementer" and not vendor:
            vendor = "ARM"
    return model, vendor


def cpu_model() -> tuple[str, str]:
    try:
        model, vendor = parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        model, vendor = "", ""
    return model or platform.processor(), vendor


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Rows of `name, memory.total` (MiB, no units); malformed rows are skipped."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        name, _, memory = line.rpartition(",")
        memory = memory.strip().removesuffix("MiB").strip()
        if name.strip() and memory.isdigit():
            gpus.append(Gpu(bands.gpu_vendor(name), int(memory)))
    return gpus


def nvidia_gpus(timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> list[Gpu]:
    """GPUs as `nvidia-smi` lists them; none when it is absent, fails or hangs."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run([exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def build_profile(
    *,
    system: str,
    machine: str,
    cpu_model_name: str,
    cpu_vendor: str,
    cores: int,
    ram_bytes: int,
    disk_free_bytes: int,
    gpus: list[Gpu],
) -> HardwareProfile:
    """Measurements → bands. Pure: the only place exact values are turned into what leaves the machine."""
    vendors = sorted({g.vendor for g in gpus})
    return HardwareProfile(
        os=bands.os_family(system),
        arch=bands.arch_family(machine),
        cpu=bands.cpu_family(cpu_model_name, cpu_vendor),
        cores=bands.cores_band(cores),
        ram=bands.ram_band(ram_bytes),
        disk_free=bands.disk_band(disk_free_bytes),
        gpu="+".join(vendors) if vendors else "none",
        gpu_count=bands.gpu_count_band(len(gpus)),
        vram=bands.vram_band(max((g.memory_mib for g in gpus), default=0)),
        vram_total=bands.vram_band(sum(g.memory_mib for g in gpus)),
    )


def profile(data_dir: Path = Path(".fedai"), *, probe_gpu: bool = True) -> HardwareProfile:
    """This machine's hardware profile, in bands. `data_dir` is where the node keeps its data."""
    model, vendor = cpu_model()
    return build_profile(
        system=platform.system(),
        machine=platform.machine(),
        cpu_model_name=model,
        cpu_vendor=vendor,
        cores=logical_cores(),
        ram_bytes=total_ram(),
        disk_free_bytes=free_disk(data_dir),
        gpus=nvidia_gpus() if probe_gpu else [],
    )
