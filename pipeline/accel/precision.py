"""Which precision runs fastest here without changing answers, and a PyTorch model in it."""

from __future__ import annotations

import warnings

import torch

from ..settings import PRECISIONS


def cpu_supports(feature: str) -> bool:
    return bool(getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)())


def resolve_precision(precision: str) -> str:
    """What 'auto' means on this machine (measured on 2-core x86 CPUs, see docs/performance.md):

    - AMX (bf16 matrix tiles): bf16.
    - VNNI without AMX: int8 linear layers in the classifiers; bf16 there is emulated and slower than fp32.
    - otherwise: fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if cpu_supports("amx_tile"):
        return "bf16"
    if cpu_supports("vnni"):
        return "int8"
    return "fp32"


def for_inference(model: torch.nn.Module, precision: str) -> tuple[torch.nn.Module, torch.dtype]:
    """The model in the resolved precision (PyTorch), and the dtype its inputs must have."""
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
