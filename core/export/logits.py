"""What every format exports: the sub-network as named int64 inputs -> fp32 logits, and inputs to trace it with."""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
from torch import nn

from ..slim import SlimModel


class _Logits(nn.Module):
    def __init__(self, slim: SlimModel):
        super().__init__()
        self.slim = slim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # fp32 logits whatever the weights' dtype: consumers need not care about fp16
        return self.slim(input_ids, attention_mask, None, return_dict=False).float()


class _LogitsWithTypes(_Logits):
    def forward(  # type: ignore[override]  # one input more: the exporters read the inputs from the signature
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.slim(input_ids, attention_mask, token_type_ids, return_dict=False).float()


def input_names_for(tokenizer, slim: SlimModel) -> list[str]:
    """The model's inputs: the tokenizer's, so `session.run(None, dict(tokenizer(..., return_tensors="np")))` works."""
    names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "token_type_ids", "attention_mask"])
    types = "token_type_ids" in names and slim.config.type_vocab_size > 0
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])


def logits_module(slim: SlimModel, input_names: list[str]) -> nn.Module:
    """`slim` as a module of the named inputs (in `input_names`' order) that returns fp32 logits."""
    cls = _LogitsWithTypes if "token_type_ids" in input_names else _Logits
    return cls(slim).eval()


def example_inputs(input_names: list[str], vocab: int, batch: int = 2, seq: int = 8) -> tuple:
    """Random ids, a full mask and zero token types, to trace or export with."""
    # batch and seq above 1: torch.export specialises dimensions of size 0/1
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    out = [ids, torch.ones_like(ids)]
    if "token_type_ids" in input_names:
        out.append(torch.zeros_like(ids))
    return tuple(out)


@contextlib.contextmanager
def quiet_export():
    """The exporter and the quantizer talk a lot (torchvision notices, deprecations); keep the user's console clean."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript", "root")
    loggers = [logging.getLogger(n if n != "root" else None) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def quiet_import():
    """Optional packages (executorch, coremltools) warn about deprecations of their own at import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
