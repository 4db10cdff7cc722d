"""The shipped MiniLM-L6-H384: it loads offline, our sliced forward matches transformers, rewiring keeps logits."""

from __future__ import annotations

import torch

from dynastudio.core.config import DataConfig
from dynastudio.core.data.batching import iterate_batches
from dynastudio.core.data.encoding import encode
from dynastudio.core.data.task import load_task_data
from dynastudio.core.dynamic import SubnetSpec, forward_subnet, subnet_size
from dynastudio.core.importance import compute_importance, rewire
from dynastudio.core.models import load_base_model, load_tokenizer, resolve_model
from dynastudio.core.store import TaskInfo


def test_builtin_minilm_end_to_end_checks():
    task = load_task_data(DataConfig(kind="demo"))
    model = load_base_model("builtin:minilm", TaskInfo.of(task), finetuned=False, seed=0)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size) == (6, 12, 384)
    tok = load_tokenizer("builtin:minilm")
    enc = encode(task.dev.select(range(32)), tok, 64)
    batches = list(iterate_batches(enc, 16, shuffle=False, pad_id=tok.pad_token_id))
    b = batches[0]
    with torch.no_grad():
        ref = model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b.get("token_type_ids")
        ).logits
        ours = forward_subnet(model, b["input_ids"], b["attention_mask"], b.get("token_type_ids")).logits
    assert torch.allclose(ref, ours, atol=1e-5)
    imp = compute_importance(model, batches, is_regression=False)
    rewire(model, imp)
    with torch.no_grad():
        after = forward_subnet(model, b["input_ids"], b["attention_mask"], b.get("token_type_ids")).logits
        quarter = forward_subnet(
            model, b["input_ids"], b["attention_mask"], b.get("token_type_ids"), spec=SubnetSpec(0.25, 0.5)
        ).logits
    assert torch.allclose(ref, after, atol=1e-4)
    assert quarter.shape == ref.shape
    sizes = subnet_size(cfg, SubnetSpec(0.5, 1.0), "keep-last")
    assert sizes["heads"] == 6 and sizes["neurons"] == 768
    assert resolve_model("builtin:minilm").endswith("model")
