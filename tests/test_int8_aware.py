"""The int8-aware stage: PyTorch's INT8 emulation reproduces the export's INT8 file, the stage trains every
sub-network through it and resumes exactly after a stop, and the INT8 exports take its weights while the fp32
model stays their reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynastudio.core import jobs
from dynastudio.core.dynamic import SubnetSpec, forward_subnet
from dynastudio.core.errors import Cancelled
from dynastudio.core.events import CheckpointSaved, EventLog, StopToken, null_sink
from dynastudio.core.export.formats import write_format
from dynastudio.core.export.job import export_job, int8_runner
from dynastudio.core.export.logits import input_names_for
from dynastudio.core.export.runners import ort_session
from dynastudio.core.extract import extract_from_model
from dynastudio.core.prepare import new_project
from dynastudio.core.project import Project
from dynastudio.core.quantaware import activation_per_token, int8_linear, weight_int8
from dynastudio.core.requests import ExportRequest, RunRequest
from helpers import stopping_at, tiny_model, tiny_project_config


def _per_token_file(tmp_path, w: np.ndarray, lopsided: bool):
    """A one-MatMul ONNX file (x @ w.T + bias) quantized by the INT8 export's per_token_matmuls, as a session; its
    input comes from a Gelu (an FFN's activation: `lopsided`) or from a Reshape that keeps its shape (as an
    attention context does)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from dynastudio.core.export.quantize import per_token_matmuls

    n_out, n_in = w.shape
    before = (
        helper.make_node("Gelu", ["x"], ["a"], name="act")
        if lopsided
        else helper.make_node("Reshape", ["x", "shape"], ["a"], name="same")
    )
    graph = helper.make_graph(
        [
            before,
            helper.make_node("MatMul", ["a", "w"], ["mm"], name="mm"),
            helper.make_node("Add", ["mm", "b"], ["y"], name="bias"),
        ],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w.T.copy(), "w"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), "b"),
            numpy_helper.from_array(np.array([0, 0, n_in], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])  # Gelu: opset 20
    onnx.save(model, tmp_path / "fp32.onnx")
    per_token_matmuls(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", False)
    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    assert "MatMul" not in {n.op_type for n in quantized.graph.node}  # it did quantize
    return ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("lopsided", [False, True])  # an FFN output's input (asymmetric), any other (symmetric)
@pytest.mark.parametrize("shift", [0.0, 3.0, -3.0])  # mixed signs, all positive, all negative: 0 is in every range
def test_the_emulation_rounds_each_token_as_the_int8_file_does(lopsided, shift, tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 16, generator=g) * 2 + shift
    x[1, 2] = 0.0  # an all-zero token: the scale floor keeps it zero
    w = torch.randn(5, 16, generator=g)
    got = _per_token_file(tmp_path, w.numpy(), lopsided).run(None, {"x": x.numpy()})[0]
    a = torch.nn.functional.gelu(x) if lopsided else x
    want = int8_linear(lopsided)(a, w).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    assert np.abs(got - (a @ w.T).numpy()).max() > 1e-3  # it did round
    assert np.all(got[1, 2] == 0)
    other = int8_linear(not lopsided)(a, w).numpy()
    assert np.abs(other - want).max() > 1e-4  # and the two ways of rounding differ


def test_a_weight_shared_by_two_products_is_quantized_once(tmp_path):
    """The exporter stores equal weights once; both products that read it are quantized, and computed alike."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from dynastudio.core.export.quantize import per_token_matmuls

    g = torch.Generator().manual_seed(4)
    w = torch.randn(8, 8, generator=g)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["a"], name="in"),
            helper.make_node("MatMul", ["a", "w"], ["h"], name="first"),
            helper.make_node("Reshape", ["h", "shape"], ["h2"], name="mid"),
            helper.make_node("MatMul", ["h2", "w"], ["y"], name="second"),
        ],
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.T.numpy().copy(), "w"), numpy_helper.from_array(np.array([0, 0, 8]), "shape")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "fp32.onnx")
    per_token_matmuls(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", False)
    m = onnx.load(str(tmp_path / "int8.onnx"))
    assert [n.op_type for n in m.graph.node].count("MatMulIntegerToFloat") == 2
    assert "w" not in {t.name for t in m.graph.initializer}  # no fp32 copy left behind
    x = torch.randn(1, 5, 8, generator=g)
    got = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()}
    )[0]
    linear = int8_linear()
    np.testing.assert_allclose(got, linear(linear(x, w), w).numpy(), rtol=0, atol=1e-5)


def test_each_token_takes_its_own_range():
    """What a device computes for a text alone: other tokens, other rows and padding change nothing in a token."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 8, generator=g)
    x[1] *= 50  # a row with a far wider range
    x[0, 3:] = 1000.0  # padding
    for lopsided in (False, True):
        both = activation_per_token(x, lopsided)
        alone = activation_per_token(x[:1, :3], lopsided)
        torch.testing.assert_close(both[0, :3], alone[0], rtol=0, atol=0)
        assert not torch.equal(both, x)


def test_weights_round_per_output_channel_symmetrically():
    w = torch.tensor([[0.5, -1.0, 0.25], [100.0, 3.0, -2.0]])
    q = weight_int8(w)
    scale = torch.tensor([1.0, 100.0]) / 127
    torch.testing.assert_close(q, torch.round(w / scale[:, None]) * scale[:, None])
    assert q[0, 1] == -1.0 and q[1, 0] == 100.0  # each channel's largest value is exact


@pytest.mark.parametrize(
    "kind,tables",
    [("bert", "fp32"), ("roberta", "fp32"), ("bert", "int8"), ("roberta", "int8")],
)
def test_the_int8_emulation_reproduces_the_int8_file(kind, tables, tmp_path):
    """The exported INT8 file gives what forward_subnet(int8=True) gives; fp32 does not.
    tables="int8": word and position tables large enough (2,100 x 32 entries, as a real model's are) that the file
    stores them as INT8 rows, which the emulation must round alike."""
    from transformers import BertTokenizerFast

    from dynastudio.core.quantaware import TABLE_MIN_ELEMENTS
    from helpers import make_tiny_model_dir

    tok = BertTokenizerFast.from_pretrained(str(make_tiny_model_dir(tmp_path / "tok")))
    big = {"vocab_size": 2100, "max_position_embeddings": 2100} if tables == "int8" else {}
    model = tiny_model(kind, seed=5, **big).eval()
    emb = model.base_model.embeddings
    assert (emb.word_embeddings.weight.numel() >= TABLE_MIN_ELEMENTS) == (tables == "int8")
    assert (emb.position_embeddings.weight.numel() >= TABLE_MIN_ELEMENTS) == (tables == "int8")
    spec = SubnetSpec(0.5, 0.5)
    slim = extract_from_model(model, spec, "paper")
    names = input_names_for(tok, slim)
    (tmp_path / "int8").mkdir()
    path = write_format("onnx-int8", slim, tmp_path / "int8", names)
    sess = ort_session(path)
    emulated = int8_runner(model, spec, "paper")
    g = np.random.default_rng(3)
    worst, fp32_gap = 0.0, 0.0
    for length in (3, 9, 17):
        ids = g.integers(5, model.config.vocab_size, (1, length))
        f = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            f["token_type_ids"] = np.zeros_like(ids)
        f = {k: np.asarray(v, np.int64) for k, v in f.items() if k in names}
        file_out = sess.run(None, f)[0]
        worst = max(worst, float(np.abs(file_out - emulated(f)).max()))
        with torch.no_grad():
            t = {k: torch.from_numpy(v) for k, v in f.items()}
            fp32 = forward_subnet(model, t["input_ids"], t["attention_mask"], t.get("token_type_ids"), spec=spec)
        fp32_gap = max(fp32_gap, float(np.abs(file_out - fp32.logits.numpy()).max()))
    # within a few rounding steps: onnxruntime may send a value that sits on a rounding tie the other way
    assert worst < 1e-3, worst
    assert fp32_gap > 20 * max(worst, 1e-8), (fp32_gap, worst)  # the emulation follows the file, not fp32


def _run(project, events=null_sink, stop=None, until=None):
    return jobs.run("run", project, RunRequest(until=until), events, stop or StopToken())


@pytest.mark.slow
def test_the_stage_trains_resumes_exactly_and_feeds_the_int8_export(tiny_model_dir, tiny_task_files, tmp_path):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, int8_epochs=1, int8_lr=5e-4, checkpoint_every=100)
    ref = new_project(tmp_path / "ref", cfg)
    _run(ref, until="int8-aware")
    assert ref.is_done("int8-aware") and ref.has_model("int8") and ref.int8_aware_trained_for() == "per-token"
    a, d = ref.load_model("int8").state_dict(), ref.load_model("depth").state_dict()
    assert any(not torch.equal(a[k], d[k]) for k in a)  # it trained

    cut = new_project(tmp_path / "cut", cfg)
    stop, seen, sink = stopping_at("int8-aware", 3)
    with pytest.raises(Cancelled):
        _run(cut, sink, stop)
    assert seen.of(CheckpointSaved)[-1].stage == "int8-aware"
    reopened = Project.open(cut.root)
    assert _run(reopened, until="int8-aware").ran == ("int8-aware",)
    b = reopened.load_model("int8").state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-6, worst

    _run(ref)  # evaluate: results.json keeps the fp32 model's scores
    assert ref.load_results()["model"] == "depth"
    out = tmp_path / "phone"
    report = export_job(ref, ExportRequest(0.5, 0.5, "onnx-int8", str(out)), null_sink, StopToken())
    v = json.loads((out / "verification.json").read_text())
    assert v["quantization"]["path"] == "int8-aware" and v["quantization"]["weights_from"] == "int8"
    assert "depth" in v["reference"] and v["source"]["model"] == "int8"
    assert v["quantization"]["method"] == "per-token" and v["dev"]["rows_per_call"] == 32  # batches change nothing
    emulation = v["quantization"]["emulation"]
    assert emulation["agreement"] == 1.0 and emulation["max_abs_diff"] < 1e-3, emulation
    assert report.format == "onnx-int8"
    # the latency job's INT8 files (Explore's INT8 points) are the ones the export ships
    from dynastudio.core.latency import latency_job
    from dynastudio.core.requests import LatencyRequest

    timed = latency_job(
        ref, LatencyRequest(formats=("fp32", "int8"), runs=4, warmup=1, specs=((0.5, 0.5),)), EventLog(), StopToken()
    )
    assert timed["setup"]["int8_weights"] == "int8"
    # the fp32 export of the same cell keeps the depth model's weights
    fp32 = tmp_path / "fp32"
    export_job(ref, ExportRequest(0.5, 0.5, "onnx", str(fp32)), null_sink, StopToken())
    assert json.loads((fp32 / "verification.json").read_text())["source"]["model"] == "depth"


@pytest.mark.slow
def test_without_the_stage_int8_exports_say_post_training(tiny_model_dir, tiny_task_files, tmp_path):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    _run(project)
    assert project.stage_info("int8-aware").get("skipped")
    out = tmp_path / "phone"
    export_job(project, ExportRequest(0.5, 0.5, "onnx-int8", str(out)), null_sink, StopToken())
    v = json.loads((out / "verification.json").read_text())
    assert v["quantization"]["path"] == "post-training" and v["quantization"]["emulation"] is None
    assert v["quantization"]["method"] == "per-token"
    assert v["source"]["model"] == "depth"


def test_int8_aware_weights_serve_only_the_method_they_were_trained_for(tiny_model_dir, tiny_task_files, tmp_path):
    """A stage of before round 8 trained through one range per tensor and recorded no method: its weights are not
    the per-token files' (they would lose to the fp32 model's); one that recorded per-token's are."""
    p = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    p.save_model("int8", tiny_model("bert", seed=1))
    p.mark_done("int8-aware", {"seconds": 1.0, "skipped": False})
    assert p.int8_aware_trained_for() == "dynamic" and not p.has_int8_aware_model()
    p.mark_done("int8-aware", {"seconds": 1.0, "skipped": False, "emulation": "per-token"})
    assert p.int8_aware_trained_for() == "per-token" and p.has_int8_aware_model()
    p.mark_done("int8-aware", {"seconds": 1.0, "skipped": True, "emulation": "per-token"})
    assert p.int8_aware_trained_for() is None and not p.has_int8_aware_model()


def test_changing_int8_epochs_runs_the_stage_again(tiny_model_dir, tiny_task_files, tmp_path):
    """`dynastudio run --int8-epochs N` saves N; a stage that ran (or was skipped) with another N runs again, and so
    does evaluate after it, while the stages before it stay done."""
    from argparse import Namespace

    from dynastudio.core.cli.pipeline import _apply_run_options
    from dynastudio.core.errors import ConfigError

    p = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    for stage in ("finetune-subnets", "int8-aware", "evaluate"):
        p.mark_done(stage, {"seconds": 1.0, "skipped": stage != "evaluate"})
    p.results_path.write_text("{}")
    from dynastudio.core.cli import build_parser

    # the options as `run` parses them (every option it has, so a new one cannot be missing here)
    options = build_parser().parse_args(["run", str(p.root), "--int8-epochs", "1"])
    _apply_run_options(p, options)
    again = Project.open(p.root)
    assert again.config.train.int8_epochs == 1.0
    assert again.is_done("finetune-subnets") and not again.is_done("int8-aware") and not again.is_done("evaluate")
    assert not again.results_path.exists()
    with pytest.raises(ConfigError, match="--int8-epochs -1: must be 0 or more"):
        _apply_run_options(again, Namespace(**{**vars(options), "int8_epochs": -1.0}))
