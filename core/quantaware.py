"""INT8 fake quantization that reproduces the export's onnxruntime dynamic quantization, for quantization-aware
distillation (the int8-aware stage).

The INT8 files (export/quantize.py) come from onnxruntime's `quantize_dynamic`: each MatMul with a weight input gets
  - its weight as INT8 per output channel, symmetric over [-127, 127]: scale = max |w| of the channel / 127;
  - its activation input quantized on the fly by DynamicQuantizeLinear: UINT8, one scale and zero point for the
    whole tensor, from that tensor's own minimum and maximum (each widened to include 0):
    scale = (max - min) / 255, zero point = round(-min / scale);
  - the product accumulated in int32 and scaled back to fp32, then the bias added in fp32;
  - the large lookup tables (word and position embeddings) stored as INT8 rows, a scale per row (table_int8). A
    trimmed vocabulary's rare rows are stored at 4 bits in the android/arm-linux files: not emulated here.
A deployed classifier answers one text at a time (batch 1, no padding), so the activation's "whole tensor" is one
row's real tokens. Training batches many padded rows: the ranges here are taken per row over its real tokens,
which is what the file computes for that row alone.

torch's fake_quantize ops round half to even (as onnxruntime does) and pass the gradient straight through inside
the range (the straight-through estimator). Weights and activations are fake-quantized in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHT_QMAX = 127  # symmetric INT8: onnxruntime's range for symmetric QInt8 weights is [-127, 127]
ACT_QMAX = 255  # UINT8 activations
# lookup tables (embeddings) of at least this many entries are stored as INT8 rows in the INT8 files
# (export/quantize.py compact_lookup_tables); smaller ones stay fp32
TABLE_MIN_ELEMENTS = 65536


def weight_int8(w: torch.Tensor) -> torch.Tensor:
    """`w` (out x in, as nn.Linear holds it) rounded to INT8 per output channel, back in fp32."""
    w32 = w.float()
    scale = (w32.detach().abs().amax(dim=1) / WEIGHT_QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    zero = torch.zeros(w32.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w32, scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


def activation_uint8(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """`x` (rows x tokens x features, or rows x features) rounded to UINT8 with one scale and zero point per row,
    from that row's real tokens (`mask`: rows x tokens, true or 1 for a real token), back in fp32."""
    x32 = x.float()
    rows = x32.shape[0]
    flat = x32.detach().reshape(rows, -1, x32.shape[-1])
    if mask is not None and x32.dim() == 3:
        real = mask.bool()[:, :, None]
        lo = flat.masked_fill(~real, float("inf")).amin(dim=(1, 2))
        hi = flat.masked_fill(~real, float("-inf")).amax(dim=(1, 2))
    else:
        lo, hi = flat.amin(dim=(1, 2)), flat.amax(dim=(1, 2))
    lo, hi = lo.clamp_max(0.0), hi.clamp_min(0.0)
    scale = (hi - lo) / ACT_QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale keeps it zero
    zero = torch.round(-lo / scale).clamp(0, ACT_QMAX).to(torch.int32)
    out = torch.fake_quantize_per_channel_affine(x32.reshape(rows, -1), scale, zero, 0, 0, ACT_QMAX)
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


def int8_linear(mask: torch.Tensor | None):
    """F.linear as the INT8 file computes it, for the rows of one batch (`mask`: its attention mask)."""

    def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        row_mask = mask if x.dim() == 3 else None
        return F.linear(activation_uint8(x, row_mask), weight_int8(w), None if b is None else b.float())

    return linear
