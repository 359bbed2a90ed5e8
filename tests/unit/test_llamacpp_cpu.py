"""The CPU fingerprint that keys native llama-server builds: what changes it and what does not."""

from __future__ import annotations

import pytest

from fedai.llamacpp.cpu import cpu_fingerprint, cpu_identity, cpu_name, cpuinfo_identity

EPYC = """\
processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
cpu MHz\t\t: {mhz}
core id\t\t: {n}
bogomips\t: 5192.28
microcode\t: 0x{n}
flags\t\t: {flags}
bugs\t\t: sysret_ss_attrs spectre_v1
"""
FLAGS = "fpu sse sse2 avx avx2 fma f16c bmi2 avx512f"
SAPPHIRE_RAPIDS_FLAGS = FLAGS + " amx_tile amx_int8 amx_bf16 avx512_fp16"
GRAVITON = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""


def cpuinfo(cores: int = 2, *, flags: str = FLAGS, mhz: str = "2595.124") -> str:
    return "\n".join(EPYC.format(n=n, mhz=mhz, flags=flags) for n in range(cores))


def test_clock_core_ids_microcode_and_flag_order_do_not_change_it() -> None:
    base = cpu_fingerprint(cpuinfo())
    assert cpu_fingerprint(cpuinfo(mhz="1500.000")) == base
    assert cpu_fingerprint(cpuinfo(cores=64)) == base, "identical cores are one description"
    assert cpu_fingerprint(cpuinfo(flags=" ".join(reversed(FLAGS.split())))) == base
    assert len(base) == 16 and int(base, 16) >= 0


def test_other_instructions_change_it() -> None:
    assert cpu_fingerprint(cpuinfo(flags=SAPPHIRE_RAPIDS_FLAGS)) != cpu_fingerprint(cpuinfo())
    assert cpu_fingerprint(cpuinfo().replace("AMD EPYC", "AMD EPYC 9654")) != cpu_fingerprint(cpuinfo())


def test_a_mix_of_cores_is_described_whole() -> None:
    mixed = cpuinfo(cores=1) + "\n" + EPYC.format(n=1, mhz="1", flags=SAPPHIRE_RAPIDS_FLAGS)
    assert len(cpuinfo_identity(mixed)) == 2
    assert cpu_fingerprint(mixed) not in {
        cpu_fingerprint(cpuinfo()),
        cpu_fingerprint(cpuinfo(flags=SAPPHIRE_RAPIDS_FLAGS)),
    }


def test_arm_cores_are_described_by_implementer_part_and_features() -> None:
    (described,) = cpuinfo_identity(GRAVITON)
    assert described["CPU part"] == "0xd0c" and "asimddp" in described["Features"].split()
    assert "BogoMIPS" not in described and "CPU revision" not in described
    assert cpu_fingerprint(GRAVITON) != cpu_fingerprint(GRAVITON.replace(" asimddp", ""))


def test_without_proc_cpuinfo_the_platform_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.processor", lambda: "arm")
    identity = cpu_identity("")
    assert "cpus" not in identity and identity["processor"] == "arm"
    assert cpu_fingerprint("") == cpu_fingerprint("")
    assert cpu_name("").startswith("arm (")


def test_the_name_is_the_model_name_and_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert cpu_name(cpuinfo()) == "AMD EPYC (x86_64)"
