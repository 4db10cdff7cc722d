"""INT8 fake quantization that reproduces the export's INT8 files (export/quantize.per_token_matmuls), for
quantization-aware distillation (the int8-aware stage) and the export's check of that stage's files.

In the INT8 files each MatMul with a weight input (the six projections of every layer) gets
  - its weight as INT8 per output channel, symmetric over [-127, 127]: scale = max |w| of the channel / 127;
  - its input quantized on the fly with a scale per token (a row of the input; per_token_matmuls says why):
    the output of the FFN's activation function, which is lopsided around 0, asymmetrically (UINT8, a scale and
    zero point per token from its minimum and maximum, each widened to include 0), every other input
    symmetrically (scale = max |x| of the token / 127, zero point 128);
  - the product accumulated in int32, scaled back to fp32, then the bias added in fp32;
  - the large lookup tables (word and position embeddings) stored as INT8 rows, a scale per row (table_int8). A
    trimmed vocabulary's rare rows are stored at 4 bits in the android/arm-linux files: not emulated here.
The pooler and classifier stay fp32 in the files (Gemm nodes) and here. A token's quantization depends on that
token alone, so padded training batches compute what the file computes for each row alone.

The rounding is half to even (as onnxruntime's); the gradient passes straight through the rounding (the
straight-through estimator). Weights and activations are fake-quantized in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHT_QMAX = 127  # symmetric INT8: onnxruntime's range for symmetric QInt8 weights is [-127, 127]
ACT_QMAX = 255  # UINT8 activations
ACT_LEVELS = ACT_QMAX  # an asymmetric range is split into this many steps
SYMMETRIC_ZERO = 128  # the zero point of a symmetric UINT8 input (values 1..255)
SCALE_FLOOR = 1e-30  # the scale of an all-zero token (any positive scale keeps it zero)
# lookup tables (embeddings) of at least this many entries are stored as INT8 rows in the INT8 files
# (export/quantize.py compact_lookup_tables); smaller ones stay fp32
TABLE_MIN_ELEMENTS = 65536


def weight_int8(w: torch.Tensor) -> torch.Tensor:
    """`w` (out x in, as nn.Linear holds it) rounded to INT8 per output channel, back in fp32."""
    w32 = w.float()
    scale = (w32.detach().abs().amax(dim=1) / WEIGHT_QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    zero = torch.zeros(w32.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w32, scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


def activation_per_token(x: torch.Tensor, lopsided: bool = False) -> torch.Tensor:
    """`x` (..., features) rounded to UINT8 with a range per token (its last axis), back in fp32, as
    export/quantize.per_token_matmuls computes it: asymmetric when `lopsided` (an activation function's output),
    else symmetric around zero point 128."""
    x32 = x.float()
    d = x32.detach()
    if lopsided:
        lo = d.amin(dim=-1, keepdim=True).clamp_max(0.0)
        hi = d.amax(dim=-1, keepdim=True).clamp_min(0.0)
        scale = ((hi - lo) / ACT_LEVELS).clamp_min(SCALE_FLOOR)
        zero = torch.clamp(torch.round(-lo / scale), 0, ACT_QMAX)
    else:
        scale = (d.abs().amax(dim=-1, keepdim=True) / WEIGHT_QMAX).clamp_min(SCALE_FLOOR)
        zero = torch.full_like(scale, float(SYMMETRIC_ZERO))
    # torch's fake quantization with a "channel" per token: the rows of the input flattened to (tokens, features)
    rows = x32.reshape(-1, x32.shape[-1])
    out = torch.fake_quantize_per_channel_affine(
        rows, scale.reshape(-1), zero.reshape(-1).to(torch.int32), 0, 0, ACT_QMAX
    )
    return out.reshape(x32.shape)


def table_int8(table: torch.Tensor) -> torch.Tensor:
    """A lookup table (rows x hidden) as the INT8 file stores it: each row symmetric INT8, scale = max |row| / 127
    (1 for an all-zero row), the scale itself kept as fp16; back in fp32. The gradient passes straight through."""
    t32 = table.float()
    scale = t32.detach().abs().amax(dim=1, keepdim=True) / WEIGHT_QMAX
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(t32.detach() / scale), -WEIGHT_QMAX, WEIGHT_QMAX)
    deq = q * scale.half().float()
    return t32 + (deq - t32).detach()


def int8_tables(embeddings: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The embeddings module's lookup tables that the INT8 file stores as INT8 rows (those of at least
    TABLE_MIN_ELEMENTS entries), by parameter name, as that file computes them; for torch.func.functional_call."""
    return {
        f"{name}.weight": table_int8(m.weight)
        for name, m in embeddings.named_modules()
        if isinstance(m, torch.nn.Embedding) and m.weight.numel() >= TABLE_MIN_ELEMENTS
    }


def int8_linear(lopsided: bool = False):
    """F.linear as the INT8 file computes a projection; `lopsided`: its input is an activation function's output."""

    def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(activation_per_token(x, lopsided), weight_int8(w), None if b is None else b.float())

    return linear
