"""Extraction: the standalone sliced model equals the dynamic one, is physically smaller, and reloads on its own."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch

from dynastudio.core.dynamic import SubnetSpec, forward_subnet, subnet_size
from dynastudio.core.errors import ConfigError, ProjectError
from dynastudio.core.extract import extract, extract_from_model
from dynastudio.core.slim import DynaBertSlimConfig, SlimModel
from helpers import make_tiny_model_dir, tiny_model, tiny_project_config

SPECS = [
    SubnetSpec(1.0, 1.0),
    SubnetSpec(0.75, 1.0),
    SubnetSpec(0.5, 0.75),
    SubnetSpec(0.25, 0.5),
    SubnetSpec(1.0, 0.5),
]


def _inputs(model, seed=0, batch=3, seq=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = model.config.pad_token_id or 0
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("rule", ["paper", "keep-last"])
def test_extracted_logits_equal_dynamic(kind, rule):
    model = tiny_model(kind, seed=4)
    ids, mask = _inputs(model)
    for spec in SPECS:
        slim = extract_from_model(model, spec, rule)
        with torch.no_grad():
            ref = forward_subnet(model, ids, mask, spec=spec, depth_rule=rule).logits
            got = slim(ids, mask)
            unpadded = forward_subnet(
                model, ids[:1], mask[:1], spec=spec, depth_rule=rule
            ).logits  # SDPA without a mask
        assert (got - ref).abs().max() <= 1e-5, (spec, rule)
        assert (slim(ids[:1], mask[:1]) - unpadded).abs().max() <= 1e-5


def test_extracted_model_is_physically_smaller_and_describes_itself():
    model = tiny_model("bert", seed=1)
    spec = SubnetSpec(0.5, 0.5)
    slim = extract_from_model(model, spec, "keep-last")
    c = slim.config
    assert c.heads_per_layer == [2, 2] and c.ffn_per_layer == [32, 32] and c.num_hidden_layers == 2
    assert c.source["kept_layers"] == [1, 3] and c.source["width_mult"] == 0.5 and c.head_kind == "bert"
    layer = slim.layers[0]
    assert layer.query.weight.shape == (16, 32) and layer.attention_output.weight.shape == (32, 16)
    assert layer.intermediate.weight.shape == (32, 32) and layer.output.weight.shape == (32, 32)
    # the parameter count is the one the results grid reports for this sub-network
    assert sum(p.numel() for p in slim.parameters()) == subnet_size(model.config, spec, "keep-last")["total_params"]
    # copies, not views: training the source later does not change the extracted model
    before = slim.layers[0].query.weight.clone()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.query.weight.add_(1.0)
    assert torch.equal(slim.layers[0].query.weight, before)


def test_slim_round_trips_through_save_pretrained(tmp_path):
    model = tiny_model("roberta", seed=2)
    slim = extract_from_model(model, SubnetSpec(0.75, 0.75), "paper")
    slim.save_pretrained(str(tmp_path))
    back = SlimModel.from_pretrained(str(tmp_path)).eval()
    assert isinstance(back.config, DynaBertSlimConfig) and back.config.position_kind == "roberta"
    ids, mask = _inputs(model)
    with torch.no_grad():
        assert torch.equal(back(ids, mask, return_dict=False), slim(ids, mask))
        out = back(ids, mask, labels=torch.tensor([0, 1, 1]), return_dict=True)
    assert out.loss is not None and out.logits.shape == (3, 2)


def test_dynamic_uses_the_slim_layer_math():
    import dynastudio.core.dynamic as dynamic
    import dynastudio.core.slim as slim

    assert dynamic.layer_forward is slim.layer_forward
    assert dynamic.LayerWeights is slim.LayerWeights and dynamic.LayerHyper is slim.LayerHyper


def test_slim_module_is_self_contained():
    """It ships inside HF exports as modeling_dynabert.py: only torch, transformers and the standard library."""
    import sys

    import dynastudio.core.slim

    tree = ast.parse(Path(dynastudio.core.slim.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in core/slim.py"
            roots.add(node.module.split(".")[0])
    allowed = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)
    assert roots <= allowed, roots - allowed


@pytest.fixture()
def tiny_project(tmp_path, tiny_task_files):
    from dynastudio.core.prepare import new_project

    model_dir = make_tiny_model_dir(tmp_path / "model")
    project = new_project(tmp_path / "proj", tiny_project_config(model_dir, *tiny_task_files, depth_rule="paper"))
    model = tiny_model(seed=7)
    project.save_model("teacher", model)
    project.mark_done("finetune", {})
    return project, model


def test_extract_from_a_project_uses_its_model_and_depth_rule(tiny_project):
    project, model = tiny_project
    slim = extract(project, 0.5, 0.5)
    assert slim.config.source["model_name"] == "teacher" and slim.config.source["kept_layers"] == [0, 2]
    ids, mask = _inputs(model)
    with torch.no_grad():
        ref = forward_subnet(model, ids, mask, spec=SubnetSpec(0.5, 0.5), depth_rule="paper").logits
        assert (slim(ids, mask) - ref).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="multiplier"):
        extract(project, 1.5, 1.0)


def test_missing_or_corrupted_checkpoint_is_a_clear_error(tiny_project):
    project, _ = tiny_project
    weights = project.model_dir("teacher") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ProjectError, match="corrupted"):
        extract(project, 0.5, 1.0)
    weights.unlink()
    with pytest.raises(
        ProjectError, match=r"models/teacher: the finetune stage's output is missing: run `dynastudio run"
    ):
        extract(project, 0.5, 1.0)  # the model is gone: the project says which and how to make it again
    shutil.rmtree(project.model_dir("teacher"))
    with pytest.raises(ProjectError, match="missing"):
        extract(project, 0.5, 1.0, model_name="teacher")
