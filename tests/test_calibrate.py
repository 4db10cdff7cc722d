"""Calibrated static INT8 (core/export/calibrate.py) on a tiny random BERT: the QDQ file, its calibration rows (train
only), and the sensitivity pass that keeps the costliest MatMuls in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dynastudio.core.dynamic import SubnetSpec
from dynastudio.core.export import calibrate
from dynastudio.core.export.calibrate import (
    matmul_nodes,
    sensitivity_pass,
    static_matmuls,
    train_feeds,
)
from dynastudio.core.export.formats import write_format
from dynastudio.core.export.logits import input_names_for
from dynastudio.core.export.runners import ort_session
from dynastudio.core.extract import extract_from_model
from dynastudio.core.prepare import prepare_inputs, project_tokenizer
from helpers import exportable_project


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, tiny_task_files):
    """(fp32 ONNX file, the project's encoded inputs, input names, pad id)."""
    root = tmp_path_factory.mktemp("calibrate")
    project = exportable_project(root, *tiny_task_files)
    inputs = prepare_inputs(project)
    tokenizer = project_tokenizer(project)
    slim = extract_from_model(project.load_model("teacher"), SubnetSpec(), project.config.train.depth_rule)
    names = input_names_for(tokenizer, slim)
    (root / "onnx").mkdir()
    path = write_format("onnx", slim, root / "onnx", names)
    return path, inputs, names, tokenizer.pad_token_id


def _logits(path: Path, feeds) -> np.ndarray:
    sess = ort_session(path)
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _rows(feeds) -> set[tuple[int, ...]]:
    out = set()
    for f in feeds:
        for ids, mask in zip(f["input_ids"], f["attention_mask"]):
            out.add(tuple(int(i) for i in ids[mask.astype(bool)]))
    return out


def test_calibration_and_scoring_rows_are_disjoint_samples_of_train(fp32):
    _, inputs, names, pad = fp32
    cal, scoring = train_feeds(inputs.train, names, pad, calibration_rows=40, scoring_rows=60, batch_size=16)
    assert sum(len(f["input_ids"]) for f in cal) == 40 and sum(len(f["input_ids"]) for f in scoring) == 60
    train = {tuple(int(i) for i in r) for r in inputs.train.input_ids}
    dev = {tuple(int(i) for i in r) for r in inputs.dev.input_ids}
    for rows in (_rows(cal), _rows(scoring)):
        assert rows <= train
        assert not rows & (dev - train)  # no row that only dev has
    assert len({f["input_ids"].shape[1] for f in cal}) == 1  # one shape: the histogram calibrators stack them
    # disjoint by position in train (two train rows may hold the same sentence, so not compared by content)
    idx = np.random.default_rng(0).permutation(len(inputs.train))
    assert not set(idx[:40]) & set(idx[40:100])


@pytest.mark.parametrize("method", calibrate.CALIBRATORS)
def test_static_int8_is_qdq_with_per_channel_weights_and_follows_fp32(fp32, tmp_path, method):
    src, inputs, names, pad = fp32
    # batches of 4 random rows differ in length: the histogram calibrators need them padded to one shape
    cal, scoring = train_feeds(inputs.train, names, pad, calibration_rows=64, scoring_rows=64, batch_size=4)
    out = tmp_path / "int8.onnx"
    static_matmuls(src, out, False, cal, method)
    m = onnx.load(str(out))
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: t for t in m.graph.initializer}
    weight_scales = [
        inits[n.input[1]]
        for n in m.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert weight_scales and all(np.prod(s.dims) > 1 for s in weight_scales)  # one scale per output channel
    ref, got = _logits(src, scoring), _logits(out, scoring)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.98


def test_an_unknown_calibration_method_is_a_one_line_error(fp32, tmp_path):
    from dynastudio.core.errors import ConfigError

    with pytest.raises(ConfigError, match="minmax, percentile, entropy"):
        static_matmuls(fp32[0], tmp_path / "x.onnx", False, [], "kl")


def _fp32_matmuls(path: Path) -> set[str]:
    """The MatMuls of a quantized file whose weight is still a plain fp32 initializer."""
    m = onnx.load(str(path))
    fp32 = {t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return {n.name for n in m.graph.node if n.op_type == "MatMul" and any(i in fp32 for i in n.input)}


def test_the_sensitivity_pass_keeps_the_matmuls_that_cost_agreement_in_fp32(fp32, monkeypatch):
    """A stand-in runtime whose predictions flip on a third of the rows unless two chosen MatMuls stay fp32, and on
    a few more unless a third does: the pass must find exactly those, in order of cost, and calibrate only once."""
    src, inputs, names, pad = fp32
    nodes = matmul_nodes(src)
    costly = {nodes[3]: 30, nodes[7]: 20, nodes[10]: 5}  # rows each one flips while quantized
    cal, scoring = train_feeds(inputs.train, names, pad, calibration_rows=32, scoring_rows=90, batch_size=16)
    reference = np.tile([[1.0, 0.0]], (90, 1))

    def run(path: Path, feeds) -> np.ndarray:
        out = reference.copy()
        start = 0
        for node, rows in costly.items():
            if node not in _fp32_matmuls(path):
                out[start : start + rows] = [0.0, 1.0]
            start += rows
        return out

    reads = []
    real_next = calibrate.FeedReader.get_next
    monkeypatch.setattr(calibrate.FeedReader, "get_next", lambda self: reads.append(1) or real_next(self))
    found = sensitivity_pass(src, cal, scoring, reference, run, max_fp32=4, target=0.99)
    assert found.all_quantized == pytest.approx(35 / 90)  # 55 of the 90 rows flipped
    assert found.kept_fp32 == [nodes[3], nodes[7], nodes[10]]
    assert found.agreement == 1.0
    assert found.gain[nodes[3]] == pytest.approx(30 / 90) and found.gain[nodes[0]] == 0.0
    assert len(reads) == len(cal) + 1  # one calibration pass (then None); every trial reuses its ranges


def test_the_sensitivity_pass_stops_at_its_limit(fp32):
    src, inputs, names, pad = fp32
    nodes = matmul_nodes(src)
    cal, scoring = train_feeds(inputs.train, names, pad, calibration_rows=16, scoring_rows=20, batch_size=16)
    reference = np.tile([[1.0, 0.0]], (20, 1))

    def run(path: Path, feeds) -> np.ndarray:
        out = reference.copy()
        for i, node in enumerate(nodes[:3]):
            if node not in _fp32_matmuls(path):
                out[i] = [0.0, 1.0]
        return out

    found = sensitivity_pass(src, cal, scoring, reference, run, max_fp32=2, target=1.0)
    assert len(found.kept_fp32) == 2 and found.agreement == pytest.approx(19 / 20)
