"""`train.precision = auto` on a CPU: bf16 autocast where the CPU computes bf16 natively, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from dynastudio.core import runtime
from dynastudio.core.errors import ConfigError

CPU = torch.device("cpu")


def _caps(monkeypatch, machine: str = "x86_64", cpuinfo: str = "", **caps):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(runtime.platform, "machine", lambda: machine)
    monkeypatch.setattr(runtime.Path, "read_text", lambda self, *a, **k: cpuinfo)


@pytest.mark.parametrize(
    "caps, want",
    [
        ({"avx512_bf16": True}, "bf16"),  # AMD Zen 4, Intel Cooper Lake
        ({"amx_bf16": True, "avx512_bf16": False}, "bf16"),  # Intel Sapphire Rapids
        ({"avx512_f": True, "avx2": True, "avx512_bf16": False}, "fp32"),  # AVX-512 without BF16: emulated, slower
        ({}, "fp32"),
    ],
)
def test_auto_on_x86_follows_the_cpus_bf16_support(monkeypatch, caps, want):
    _caps(monkeypatch, **caps)
    assert runtime.resolve_precision("auto", CPU) == want


def test_auto_on_arm_reads_the_kernels_feature_list(monkeypatch):
    _caps(monkeypatch, "aarch64", "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n")
    assert runtime.resolve_precision("auto", CPU) == "bf16"
    _caps(monkeypatch, "aarch64", "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n")
    assert runtime.resolve_precision("auto", CPU) == "fp32"


def test_an_explicit_setting_wins_over_auto(monkeypatch):
    _caps(monkeypatch, avx512_bf16=True)
    assert runtime.resolve_precision("fp32", CPU) == "fp32"
    _caps(monkeypatch, avx512_bf16=False)
    assert runtime.resolve_precision("bf16", CPU) == "bf16"  # asked for: emulated, but allowed
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        runtime.resolve_precision("fp16", CPU)


def test_a_torch_without_the_query_claims_nothing(monkeypatch):
    def missing():
        raise AttributeError("get_capabilities")

    monkeypatch.setattr(torch.cpu, "get_capabilities", missing)
    monkeypatch.setattr(runtime.platform, "machine", lambda: "x86_64")
    assert runtime.resolve_precision("auto", CPU) == "fp32"


def test_this_machine_is_answered_without_error():
    assert runtime.resolve_precision("auto", CPU) in ("fp32", "bf16")
    assert isinstance(runtime.cpu_native_bf16(), bool)
