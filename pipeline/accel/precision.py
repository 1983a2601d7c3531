"""Which precision runs fastest here without changing answers, and a PyTorch model in it."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

from ..settings import PRECISIONS

# /proc/cpuinfo flags of each feature torch.cpu reports (what torch checks, read without importing torch).
_CPU_FLAGS = {"amx_tile": ("amx_tile",), "bf16": ("avx512_bf16", "amx_bf16"), "vnni": ("avx512_vnni", "avx_vnni")}


def cpu_supports(feature: str) -> bool:
    flags = cpu_flags()
    if flags is None:  # not Linux: ask torch
        import torch

        return bool(getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)())
    return any(flag in flags for flag in _CPU_FLAGS[feature])


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where there is none (not Linux)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return None
    line = next((line for line in info.read_text().splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cuda_available() -> bool:
    """A CUDA GPU, asked of torch only when it is already imported or an NVIDIA driver is loaded (importing torch
    to learn there is no GPU costs seconds of a cold start)."""
    if "torch" not in sys.modules and not Path("/proc/driver/nvidia").exists():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str, role: str = "classifier") -> str:
    """What 'auto' means on this machine for a classifier or a segmenter (measured on 2-core x86 CPUs, see
    docs/performance.md):

    - AMX (bf16 matrix tiles): bf16, every model on its OpenVINO copy compiled at bf16.
    - VNNI without AMX (AMD EPYC Zen 4, Ice Lake): the segmenters int8 (the int8 copies a release ships beside
      its weights, judged against fp32 on held-out photos; a segmenter without one runs its f32 copy), the
      classifiers fp32 (their int8 copies ran no faster than f32 with VNNI).
    - otherwise: fp32, every model on its f32 OpenVINO copy (``classifiers.openvino_kind``); without VNNI int8
      arithmetic saturates and bf16 is slower than f32.

    Each fast precision is judged against fp32 by accuracy on held-out photos (``python -m bench``), per CPU make.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if cpu_supports("amx_tile"):
        return "bf16"
    return "int8" if role == "segmenter" and cpu_supports("vnni") else "fp32"


def for_inference(model, precision: str):
    """The model in the resolved precision (PyTorch), and the dtype its inputs must have."""
    import torch

    resolved = resolve_precision(precision)
    model = model.eval()
    if resolved == "bf16":
        return model.to(torch.bfloat16), torch.bfloat16
    if resolved == "int8":
        with warnings.catch_warnings():  # torch announces a move of these kernels to torchao; they work
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return quantized, torch.float32
    return model, torch.float32
