"""fedai.profile.bands and .hardware: banding is coarse and pure, and nothing identifying leaves the machine."""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from fedai.profile import bands, hardware
from fedai.profile.hardware import Gpu, build_profile, parse_cpuinfo, parse_nvidia_smi
from fedai.protocol.messages import HardwareProfile

GIB = 1024**3
SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.mark.parametrize(
    ("cores", "band"),
    [
        (0, "1-2"),
        (1, "1-2"),
        (2, "1-2"),
        (3, "3-4"),
        (4, "3-4"),
        (5, "5-8"),
        (8, "5-8"),
        (9, "9-16"),
        (16, "9-16"),
        (17, "17+"),
        (256, "17+"),
    ],
)
def test_cores_band(cores: int, band: str) -> None:
    assert bands.cores_band(cores) == band


@pytest.mark.parametrize(
    ("gib", "band"),
    [
        (0, "<4GiB"),
        (3.5, "<4GiB"),
        (3.7, "4-8GiB"),
        (7.9, "8-16GiB"),
        (15.5, "16-32GiB"),
        (14.0, "8-16GiB"),
        (31.3, "32-64GiB"),
        (63.0, "64GiB+"),
        (1024, "64GiB+"),
    ],
)
def test_ram_band_allows_what_the_kernel_reserves(gib: float, band: str) -> None:
    """A "16 GB" machine reports ~15.5 GiB: within 10% of an edge counts as reaching it."""
    assert bands.ram_band(int(gib * GIB)) == band


@pytest.mark.parametrize(
    ("gib", "band"), [(1, "<4GiB"), (5, "4-16GiB"), (20, "16-64GiB"), (100, "64-256GiB"), (4000, "256GiB+")]
)
def test_disk_band(gib: int, band: str) -> None:
    assert bands.disk_band(gib * GIB) == band


@pytest.mark.parametrize(
    ("mib", "band"),
    [
        (None, "none"),
        (0, "none"),
        (4096, "<8GiB"),
        (8192, "8-16GiB"),
        (24564, "24-48GiB"),
        (16384, "16-24GiB"),
        (81559, "80GiB+"),
        (49140, "48-80GiB"),
    ],
)
def test_vram_band(mib: int | None, band: str) -> None:
    assert bands.vram_band(mib) == band


@pytest.mark.parametrize(
    ("model", "vendor", "family"),
    [
        ("AMD EPYC 7763 64-Core Processor", "AuthenticAMD", "AMD EPYC"),
        ("AMD Ryzen 9 5950X 16-Core Processor", "AuthenticAMD", "AMD Ryzen"),
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "GenuineIntel", "Intel Xeon"),
        ("Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz", "GenuineIntel", "Intel Core"),
        ("Intel(R) Core(TM) Ultra 7 155H", "GenuineIntel", "Intel Core Ultra"),
        ("Apple M2 Pro", "", "Apple"),
        ("", "ARM", "ARM"),
        ("Some Future CPU 9000 SN#12345", "GenuineIntel", "Intel"),
        ("QEMU Virtual CPU version 2.5+", "", "unknown"),
    ],
)
def test_cpu_family_keeps_vendor_and_family_only(model: str, vendor: str, family: str) -> None:
    assert bands.cpu_family(model, vendor) == family


def test_os_arch_and_gpu_vendor_come_from_fixed_lists() -> None:
    assert [bands.os_family(s) for s in ("Linux", "Darwin", "Windows", "FreeBSD", "Plan9")] == [
        "linux",
        "macos",
        "windows",
        "bsd",
        "other",
    ]
    assert [bands.arch_family(m) for m in ("x86_64", "AMD64", "arm64", "aarch64", "armv7l", "mips")] == [
        "x86_64",
        "x86_64",
        "aarch64",
        "aarch64",
        "arm",
        "other",
    ]
    assert bands.gpu_vendor("NVIDIA GeForce RTX 4090") == "NVIDIA"
    assert bands.gpu_vendor("Tesla T4") == "NVIDIA"
    assert bands.gpu_vendor("Mystery Accelerator SN 0042") == "unknown"


def test_at_least_orders_bands_and_refuses_unknown_ones() -> None:
    assert bands.at_least("16-32GiB", "8-16GiB", bands.RAM)
    assert bands.at_least("8-16GiB", "8-16GiB", bands.RAM)
    assert not bands.at_least("4-8GiB", "8-16GiB", bands.RAM)
    assert not bands.at_least("huge", "8-16GiB", bands.RAM)


def test_parse_cpuinfo_x86_and_arm() -> None:
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763\nserial\t: 1234\n"
    assert parse_cpuinfo(x86) == ("AMD EPYC 7763", "AuthenticAMD")
    arm = "processor\t: 0\nCPU implementer\t: 0x41\nSerial\t\t: 10000000abcdef01\n"
    assert parse_cpuinfo(arm) == ("", "ARM")


def test_parse_nvidia_smi_keeps_vendor_and_memory() -> None:
    text = "NVIDIA GeForce RTX 4090, 24564\nNVIDIA A100-SXM4-80GB, 81920 MiB\ngarbage line\n, 12\n"
    assert parse_nvidia_smi(text) == [Gpu("NVIDIA", 24564), Gpu("NVIDIA", 81920)]


def test_build_profile_bands_everything() -> None:
    profile = build_profile(
        system="Linux",
        machine="x86_64",
        cpu_model_name="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        cpu_vendor="GenuineIntel",
        cores=32,
        ram_bytes=250 * GIB,
        disk_free_bytes=900 * GIB,
        gpus=[Gpu("NVIDIA", 81920), Gpu("NVIDIA", 81920)],
    )
    assert profile == HardwareProfile(
        os="linux",
        arch="x86_64",
        cpu="Intel Xeon",
        cores="17+",
        ram="64GiB+",
        disk_free="256GiB+",
        gpu="NVIDIA",
        gpu_count="2",
        vram="80GiB+",
        vram_total="80GiB+",
    )
    cpu_only = build_profile(
        system="Darwin",
        machine="arm64",
        cpu_model_name="Apple M1",
        cpu_vendor="",
        cores=8,
        ram_bytes=16 * GIB,
        disk_free_bytes=50 * GIB,
        gpus=[],
    )
    assert (cpu_only.gpu, cpu_only.gpu_count, cpu_only.vram, cpu_only.vram_total) == ("none", "0", "none", "none")


def _mac_addresses() -> list[str]:
    found = [f"{uuid.getnode():012x}"]
    for path in Path("/sys/class/net").glob("*/address"):
        try:
            found.append(path.read_text().strip().replace(":", "").lower())
        except OSError:
            continue
    return [m for m in found if m and m != "000000000000"]


def test_profile_of_this_machine_leaks_nothing_identifying(tmp_path: Path) -> None:
    profile = hardware.profile(tmp_path / "data")
    text = json.dumps(msgspec.structs.asdict(profile))
    assert not re.search(r"\d{5,}", text), text  # no serials, exact sizes or model numbers
    assert not re.search(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}", text, re.IGNORECASE), text  # no MAC
    compact = text.lower().replace(":", "").replace("-", "")
    assert not any(mac in compact for mac in _mac_addresses())
    host = socket.gethostname().lower()
    if len(host) >= 4:
        assert host not in text.lower()
    # every value is from a fixed list
    assert profile.os in bands.OS_FAMILIES and profile.arch in bands.ARCHES
    assert profile.cores in bands.CORES and profile.ram in bands.RAM and profile.disk_free in bands.DISK
    assert profile.vram in bands.VRAM and profile.gpu_count in bands.GPU_COUNT


def _fake_nvidia_smi(bin_dir: Path, body: str) -> None:
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_nvidia_gpus_reads_nvidia_smi_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(tmp_path, 'echo "NVIDIA GeForce RTX 3090, 24576"; echo "NVIDIA GeForce RTX 3090, 24576"')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hardware.nvidia_gpus() == [Gpu("NVIDIA", 24576), Gpu("NVIDIA", 24576)]
    profile = hardware.profile(tmp_path)
    assert (profile.gpu, profile.gpu_count, profile.vram, profile.vram_total) == ("NVIDIA", "2", "24-48GiB", "48-80GiB")


def test_nvidia_gpus_gives_up_on_failure_or_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hardware.nvidia_gpus() == []  # absent
    _fake_nvidia_smi(tmp_path, 'echo "No devices were found"; exit 9')
    assert hardware.nvidia_gpus() == []
    _fake_nvidia_smi(tmp_path, f"exec {SLEEP} 5")
    started = time.monotonic()
    assert hardware.nvidia_gpus(timeout_s=0.3) == []
    assert time.monotonic() - started < 3


def test_free_disk_walks_up_to_an_existing_directory(tmp_path: Path) -> None:
    assert hardware.free_disk(tmp_path / "not" / "yet" / "created") > 0
