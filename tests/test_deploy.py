"""Deploying to a device: vocabulary trimming, compact embedding rows, the device formats, the ONNX graph as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynastudio.core.errors import ConfigError, UserError
from dynastudio.core.events import StopToken, null_sink
from dynastudio.core.export.job import export_job
from dynastudio.core.export.quantize import compact_lookup_tables, table_bytes, table_storage
from dynastudio.core.export.targets import MODEL_FILES
from dynastudio.core.export.vocab import plan_trim, plan_vocab, read_word_list, save_trimmed_tokenizer
from dynastudio.core.prepare import new_project
from dynastudio.core.project import Project
from dynastudio.core.requests import ExportRequest
from helpers import BAD, FILLER, GOOD, SPECIAL, tiny_model, tiny_project_config

UNUSED = [f"unused{i}" for i in range(60)]  # in the vocabulary, never in the task's texts
TRAIN = ["the movie was great", "a dull plot, really boring!", "unbelievably charming acting", "it is fine."]
DEV = ["great acting", "boring movie"]


@pytest.fixture(scope="module")
def wide_vocab_project(tmp_path_factory, tiny_task_files) -> Project:
    """A tiny BERT whose WordPiece vocabulary holds 60 words the task never uses."""
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("deploy")
    model_dir = root / "model"
    model_dir.mkdir()
    words = SPECIAL + GOOD + BAD + FILLER + UNUSED
    (model_dir / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizerFast.from_pretrained(str(model_dir)).save_pretrained(str(model_dir))
    tiny_model(vocab_size=len(words)).save_pretrained(str(model_dir))
    cfg = tiny_project_config(model_dir, *tiny_task_files, width_mults=(1.0, 0.5), depth_mults=(1.0, 0.5))
    p = new_project(root / "proj", cfg)
    p.save_model("teacher", tiny_model(seed=5, vocab_size=len(words)))
    p.mark_done("finetune", {})
    return p


def export(project, spec, target, out, **options):
    return export_job(project, ExportRequest(spec[0], spec[1], target, str(out), **options), null_sink, StopToken())


def _bpe_tokenizer(tmp_path: Path):
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TRAIN * 20 + ["zebras and splendid things"] * 5,
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    bpe.save(str(tmp_path / "tokenizer.json"))
    return RobertaTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _wordpiece_tokenizer(tmp_path: Path):
    from transformers import BertTokenizerFast

    words = (
        SPECIAL
        + [
            "the",
            "movie",
            "was",
            "great",
            "a",
            "dull",
            "plot",
            ",",
            "really",
            "boring",
            "!",
            "un",
            "##believ",
            "##ably",
            "charming",
            "acting",
            "it",
            "is",
            "fine",
            ".",
            "zebra",
            "splendid",
        ]
        + UNUSED
    )
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trimmed_tokenizer_keeps_the_task_tokens_and_loads_with_autotokenizer(tmp_path, kind):
    from transformers import AutoTokenizer

    (tmp_path / "src").mkdir()
    tok = (_bpe_tokenizer if kind == "bpe" else _wordpiece_tokenizer)(tmp_path / "src")
    trim = plan_trim(tok, len(tok), (TRAIN, None), [(DEV, None)], ["zebra"])
    assert len(trim.kept) < len(tok)
    special = [i for i in tok.all_special_ids]
    assert set(special) <= set(trim.kept.tolist())
    assert 0 < trim.frequent <= len(trim.kept)

    trimmed = save_trimmed_tokenizer(tok, trim, tmp_path / "out")
    again = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert len(again) == len(trim.kept)
    for text in TRAIN + DEV + ["zebra"]:
        want = trim.remap_ids(np.array(tok(text)["input_ids"]), -1)
        assert (want >= 0).all(), text
        assert again(text)["input_ids"] == want.tolist() == trimmed(text)["input_ids"], text
    # special tokens and padding are remapped consistently
    assert again.pad_token_id == int(trim.old_to_new[tok.pad_token_id])
    assert again.convert_ids_to_tokens(again("great")["input_ids"])[0] == tok.cls_token
    # a word outside the kept tokens still encodes: [UNK] for WordPiece, byte pieces for BPE
    ids = again("splendid")["input_ids"]
    pieces = again.convert_ids_to_tokens(ids)
    if kind == "wordpiece":
        assert again.unk_token in pieces
    else:
        assert (
            again.unk_token not in pieces and "".join(p for p in pieces[1:-1]).replace("Ġ", " ").strip() == "splendid"
        )


def test_word_list_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="word list not found"):
        read_word_list(tmp_path / "missing.txt")
    f = tmp_path / "w.txt"
    f.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_word_list(f)
    f.write_text("# comment\nzebra\n\n  splendid  \n", encoding="utf-8")
    assert read_word_list(f) == ["zebra", "splendid"]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_plan_vocab_tokenizes_each_split_once_and_keeps_what_plan_trim_keeps(tmp_path, kind, monkeypatch):
    """The export's trim (train and dev texts) and the held-out one (train texts only) from one pass per split."""
    from types import SimpleNamespace

    import dynastudio.core.export.vocab as vocab

    tok = (_bpe_tokenizer if kind == "bpe" else _wordpiece_tokenizer)(tmp_path)
    task = SimpleNamespace(
        train=SimpleNamespace(text_a=TRAIN, text_b=None), dev=SimpleNamespace(text_a=DEV, text_b=None)
    )
    passes = []
    counts = vocab.token_counts
    monkeypatch.setattr(vocab, "token_counts", lambda t, a, *rest, **kw: passes.append(a) or counts(t, a, *rest, **kw))
    plan = plan_vocab(tok, len(tok), task, ["zebra"])
    assert sum(a is TRAIN for a in passes) == 1 and sum(a is DEV for a in passes) == 1
    monkeypatch.setattr(vocab, "token_counts", counts)
    want, held = (plan_trim(tok, len(tok), (TRAIN, None), others, ["zebra"]) for others in ([(DEV, None)], []))
    assert plan.trim.kept.tolist() == want.kept.tolist() and plan.trim.frequent == want.frequent
    assert plan.heldout.kept.tolist() == held.kept.tolist() and plan.heldout.frequent == held.frequent
    assert plan.words == 1 and len(plan.heldout.kept) <= len(plan.trim.kept)


def _lookup_model(table: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Gather", ["embeddings.word_embeddings.weight", "ids"], ["rows"], axis=0)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", table.shape[1]])],
        [numpy_helper.from_array(table, "embeddings.word_embeddings.weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("rare_from", [None, 40])
def test_compact_embedding_rows_decode_to_the_table(tmp_path, rare_from):
    """8-bit rows (one scale each) and, from `rare_from` on, 4-bit rows (scale and offset per 32 values):
    looked up through onnxruntime they come back within half a quantization step of the fp32 table."""
    import onnx
    import onnxruntime as ort

    g = np.random.default_rng(0)
    table = (g.standard_normal((64, 64)) * g.uniform(0.01, 1.0, size=(64, 1))).astype(np.float32)
    onnx.save(_lookup_model(table), str(tmp_path / "src.onnx"))
    compact_lookup_tables(
        tmp_path / "src.onnx", tmp_path / "dst.onnx", False, "int8", min_elements=1, rare_from=rare_from
    )
    m = onnx.load(str(tmp_path / "dst.onnx"))
    onnx.checker.check_model(m)
    ids = np.array([[0, 5, 39, 40, 41], [63, 1, 2, 40, 0]], dtype=np.int64)
    got = ort.InferenceSession(str(tmp_path / "dst.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[
        0
    ]
    want = table[ids]
    step8 = np.abs(table).max(axis=1) / 127
    groups = table.reshape(64, 2, 32)
    step4 = ((groups.max(-1) - groups.min(-1)) / 15).repeat(32, axis=1)
    for r, c in np.ndindex(ids.shape):
        i = ids[r, c]
        rare = rare_from is not None and i >= rare_from
        # half a step, plus what the fp16 scales and offsets round off
        tol = (step4[i] / 2 + 2e-3 * np.abs(groups[i]).max()) if rare else step8[i] * 0.6
        assert np.all(np.abs(got[r, c] - want[r, c]) <= tol), (i, rare)
    sizes = {i.name: i.data_type for i in m.graph.initializer}
    assert sizes["embeddings.word_embeddings.weight"] == onnx.TensorProto.INT8
    assert ("embeddings.word_embeddings.weight_q4" in sizes) == (rare_from is not None)
    # what the export's size accounting says the table takes (+ the mixed lookup's few index constants)
    from onnx import numpy_helper

    stored = sum(numpy_helper.to_array(i).nbytes for i in m.graph.initializer)
    storage = table_storage("embeddings.word_embeddings.weight", 64, 64, "int8", rare_from, min_elements=1)
    assert storage == ("int8" if rare_from is None else "mixed")
    assert table_bytes(storage, 64, 64, rare_from) <= stored <= table_bytes(storage, 64, 64, rare_from) + 64


def test_a_trimmed_vocabulary_too_small_to_compact_stays_fp32(tmp_path):
    """A task with few distinct words (the demo's) trims the vocabulary below the size worth compacting: the
    table stays fp32 and the export goes on (it stopped with an internal error)."""
    import onnx

    table = np.random.default_rng(1).standard_normal((150, 64)).astype(np.float32)
    onnx.save(_lookup_model(table), str(tmp_path / "src.onnx"))
    compact_lookup_tables(
        tmp_path / "src.onnx", tmp_path / "dst.onnx", False, "int8", min_elements=150 * 64 + 1, rare_from=100
    )
    kept = {i.name: i.data_type for i in onnx.load(str(tmp_path / "dst.onnx")).graph.initializer}
    assert kept == {"embeddings.word_embeddings.weight": onnx.TensorProto.FLOAT}


@pytest.mark.slow
def test_trimmed_export_runs_with_its_own_tokenizer_and_reports_sizes(wide_vocab_project, tmp_path):
    """What a phone app does: tokenize with the folder's tokenizer, run the folder's model."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    p = wide_vocab_project
    words = tmp_path / "words.txt"
    words.write_text("unused7\n", encoding="utf-8")
    rep = export(p, (0.5, 0.5), "onnx", tmp_path / "plain")
    rep_t = export(p, (0.5, 0.5), "onnx", tmp_path / "trim", trim_vocab=True, keep_words=str(words))
    v = rep_t.verification["vocabulary"]
    n_task = len(SPECIAL) + len(GOOD) + len(BAD) + len(FILLER)
    assert v["kept_tokens"] == n_task + 1 and v["original_tokens"] == n_task + len(UNUSED)  # + the listed word
    assert v["size_after_mb"] < v["size_before_mb"] and rep_t.size_mb == pytest.approx(v["size_after_mb"])
    assert v["size_before_mb"] == pytest.approx(rep.size_mb, rel=0.01)  # what the untrimmed export weighs
    assert rep_t.passed and rep_t.agreement == 1.0  # fp32, dev tokens all kept: the same model on dev
    assert 0 <= v["heldout"]["agreement"] <= 1 and v["heldout"]["rows"] == rep_t.dev_examples
    assert "Vocabulary trimmed" in (tmp_path / "trim" / "README.md").read_text()

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "trim"))
    tok0 = AutoTokenizer.from_pretrained(str(tmp_path / "plain"))
    assert len(tok) == v["kept_tokens"] and "unused7" in tok.get_vocab() and "unused8" not in tok.get_vocab()
    s = ort.InferenceSession(str(tmp_path / "trim" / "model.onnx"), providers=["CPUExecutionProvider"])
    s0 = ort.InferenceSession(str(tmp_path / "plain" / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = ["the film was very good", "a boring and ugly plot", "unused7 lovely movie"]
    names = [i.name for i in s.get_inputs()]
    a = s.run(None, {k: v for k, v in tok(texts, padding=True, return_tensors="np").items() if k in names})[0]
    b = s0.run(None, {k: v for k, v in tok0(texts, padding=True, return_tensors="np").items() if k in names})[0]
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert json.loads((tmp_path / "trim" / "config.json").read_text())["vocab_size"] == v["kept_tokens"]
    del rep


@pytest.mark.slow
def test_phone_presets_trim_by_default_and_can_be_told_not_to(wide_vocab_project, tmp_path):
    rep = export(wide_vocab_project, (0.5, 0.5), "android", tmp_path / "a")
    assert rep.format == "ort-int8" and rep.verification["vocabulary"] is not None
    assert (tmp_path / "a" / MODEL_FILES["ort-int8"]).is_file() and rep.agreement is not None
    untrimmed = export(wide_vocab_project, (0.5, 0.5), "android", tmp_path / "b", trim_vocab=False)
    assert untrimmed.verification["vocabulary"] is None
    assert rep.verification["vocabulary"]["size_before_mb"] == pytest.approx(untrimmed.size_mb, rel=0.01)


def test_an_export_reads_the_task_rows_once(wide_vocab_project, tmp_path, monkeypatch):
    """With trimming the task's files are read once, for the vocabulary, the probe, the dev check and the
    held-out report alike; the encoded cache is not read besides."""
    import dynastudio.core.data.task as task_module
    import dynastudio.core.prepare as prepare

    reads = []
    load = task_module.load_task_data
    monkeypatch.setattr(task_module, "load_task_data", lambda cfg: reads.append(cfg) or load(cfg))
    monkeypatch.setattr(prepare, "prepare_inputs", lambda *a, **k: pytest.fail("the cache was read besides the files"))
    rep = export(wide_vocab_project, (0.5, 0.5), "onnx", tmp_path / "t", trim_vocab=True)
    assert len(reads) == 1 and rep.passed and rep.dev_examples > 0
    assert rep.verification["vocabulary"]["heldout"]["rows"] == rep.dev_examples


def test_a_trimmed_hf_folder_is_written_without_asking_to_run_its_code(wide_vocab_project, tmp_path, monkeypatch):
    """The trimmed tokenizer is loaded back from the folder: before the hf format's config.json (with its
    auto_map) is there, or transformers asks on the console whether to run the folder's code."""
    from transformers import AutoTokenizer

    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail(f"the export asked on the console: {a[:1]}"))
    rep = export(wide_vocab_project, (0.5, 0.5), "hf", tmp_path / "hf", trim_vocab=True)
    assert rep.passed and rep.verification["vocabulary"] is not None
    monkeypatch.undo()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    assert len(tok) == rep.verification["vocabulary"]["kept_tokens"]


def test_default_onnxruntime_session_leaves_skiplayernorm_unfused(wide_vocab_project, tmp_path):
    """The graph as a user opens it (default session options): onnxruntime's fused SkipLayerNormalization is
    slower on CPUs than the ops it replaces, and the saved graph carries no shape annotations that enable it."""
    import onnx
    import onnxruntime as ort

    export(wide_vocab_project, (1.0, 1.0), "onnx", tmp_path / "e")
    for f in ("model.onnx",):
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(tmp_path / "e" / f), so, providers=["CPUExecutionProvider"])
        ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
        assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops
        assert not onnx.load(str(tmp_path / "e" / f)).graph.value_info


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ort", "openvino", "executorch"])
def test_device_formats_export_and_verify_with_their_runtime(wide_vocab_project, tmp_path, fmt):
    import importlib.util

    if (
        importlib.util.find_spec({"ort": "onnxruntime", "openvino": "openvino", "executorch": "executorch"}[fmt])
        is None
    ):
        pytest.skip(f"{fmt}'s package is not installed")  # not importorskip: the studio imports openvino its own way
    rep = export(wide_vocab_project, (0.5, 0.5), fmt, tmp_path / fmt)
    v = rep.verification
    assert rep.passed and v["runtime_verified"] and rep.max_abs_diff <= v["tolerance"]
    assert (tmp_path / fmt / MODEL_FILES[fmt]).exists() and rep.size_mb > 0
    assert "## Run it" in (tmp_path / fmt / "README.md").read_text()
    if fmt == "openvino":  # the deployed precision is checked on dev as well; no usage telemetry was loaded
        import sys

        assert sys.modules.get("openvino_telemetry") is None
        assert (tmp_path / fmt / "openvino_model.bin").is_file() and rep.agreement is not None


@pytest.mark.slow
def test_openvino_int8_quantizes_per_token_on_the_fly_or_static_from_train_rows_only(
    wide_vocab_project, tmp_path, monkeypatch
):
    """openvino-int8, per-token (the default): NNCF's INT8 weights, and a group size in the IR that makes OpenVINO's
    CPU plugin quantize each token's inputs on the fly (no calibration). static: NNCF quantizes with activation
    ranges from train rows, never dev rows (dev only reports), one row per feed. Both checked on dev in OpenVINO;
    a method of the ONNX INT8 formats is refused in one line."""
    import importlib.util

    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino and nncf are not installed")
    from dynastudio.core.export import formats
    from dynastudio.core.export.runtimes import import_openvino
    from dynastudio.core.prepare import prepare_inputs

    ov = import_openvino()  # without OpenVINO's telemetry, as the studio imports it

    seen: list[dict] = []
    real = formats.openvino_int8_static

    def spy(src, dst, calibration):
        seen.extend(calibration)
        return real(src, dst, calibration)

    monkeypatch.setattr(formats, "openvino_int8_static", spy)
    rep = export(wide_vocab_project, (0.5, 0.5), "openvino-int8", tmp_path / "ov8")
    v = rep.verification
    assert rep.format == "openvino-int8" and rep.passed and rep.agreement is not None and not seen
    assert v["quantization"]["method"] == "per-token" and v["quantization"]["path"] == "post-training"
    core = ov.Core()
    model = core.read_model(str(tmp_path / "ov8" / MODEL_FILES["openvino-int8"]))
    hidden = json.loads((tmp_path / "ov8" / "dynabert_config.json").read_text())["hidden_size"]
    assert model.get_rt_info(["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"]).astype(int) == hidden
    assert core.compile_model(model, "CPU").get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == hidden
    ops = {o.get_type_name() for o in model.get_ops()}
    consts = [o for o in model.get_ops() if o.get_type_name() == "Constant"]
    assert "FakeQuantize" not in ops and any(o.get_element_type() == ov.Type.u8 for o in consts)
    bin_bytes = (tmp_path / "ov8" / "openvino_model.bin").stat().st_size  # the weights count in the model's size
    assert rep.size_mb * 1e6 >= bin_bytes > 0
    readme = (tmp_path / "ov8" / "README.md").read_text()
    assert "compile_model" in readme and "range per token" in readme and "DYNAMIC_QUANTIZATION_GROUP_SIZE" in readme

    rep = export(wide_vocab_project, (0.5, 0.5), "openvino-int8", tmp_path / "ov8s", int8_method="static")
    v = rep.verification
    assert rep.passed and v["quantization"]["method"] == "static" and "NNCF" in v["quantization"]["activations"]
    inputs = prepare_inputs(wide_vocab_project)
    train = {tuple(r) for r in inputs.train.input_ids}
    dev = {tuple(r) for r in inputs.dev.input_ids} - train  # a sentence in both splits proves nothing
    rows = [tuple(f["input_ids"][0]) for f in seen]
    assert len(rows) == min(300, len(inputs.train)) and all(f["input_ids"].shape[0] == 1 for f in seen)
    assert set(rows) <= train and not set(rows) & dev and dev
    ops = {o.get_type_name() for o in core.read_model(str(tmp_path / "ov8s" / MODEL_FILES["openvino-int8"])).get_ops()}
    assert "FakeQuantize" in ops  # NNCF's INT8 quantizers, which the CPU plugin runs as INT8 kernels
    assert "calibrated on train rows (NNCF)" in (tmp_path / "ov8s" / "README.md").read_text()

    with pytest.raises(
        ConfigError, match="int8_method 'dynamic' is not one of openvino-int8's: choose one of per-token, static$"
    ):
        export(wide_vocab_project, (0.5, 0.5), "openvino-int8", tmp_path / "bad", int8_method="dynamic")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_coreml_is_spec_checked_and_says_it_was_not_run(wide_vocab_project, tmp_path):
    import importlib.util

    if importlib.util.find_spec("coremltools") is None:
        pytest.skip("coremltools is not installed")
    rep = export(wide_vocab_project, (0.5, 0.5), "ios", tmp_path / "ios")
    v = rep.verification
    assert rep.format == "coreml" and not v["runtime_verified"] and rep.max_abs_diff is None
    assert v["spec_check"]["outputs"] == ["logits"] and not v["spec_check"]["problems"]
    assert list(v["spec_check"]["inputs"]) == v["inputs"]
    assert "Not verified on this machine" in (tmp_path / "ios" / "README.md").read_text()
    assert (tmp_path / "ios" / "model.mlpackage").is_dir() and v["vocabulary"] is not None


def test_a_missing_extra_is_a_one_line_error_with_the_pip_command(wide_vocab_project, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'dynabert-studio\[openvino\]'") as info:
        export(wide_vocab_project, (0.5, 0.5), "intel-cpu", tmp_path / "x")
    assert "\n" not in str(info.value) and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_latency_with_openvino_is_kept_as_a_device_of_its_own(wide_vocab_project, tmp_path, capsys):
    import importlib.util
    import shutil

    from dynastudio.core.cli import main
    from dynastudio.core.export.targets import OPENVINO_DEVICE

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    shutil.copytree(wide_vocab_project.root, tmp_path / "p")
    p = Project.open(tmp_path / "p")
    common = ["--seq", "16", "--runs", "2", "--warmup", "1", "--formats", "fp32,int8"]
    assert main(["latency", str(p.root), *common]) == 0
    here = {r["label"]: r for r in p.load_results()["rows"]}
    assert main(["latency", str(p.root), "--runtime", "openvino", *common]) == 0
    assert OPENVINO_DEVICE in capsys.readouterr().out
    res = p.load_results(device=OPENVINO_DEVICE)
    assert res["latency_setup"]["runtime"].startswith("OpenVINO") and OPENVINO_DEVICE in res["latency_devices"]
    for r in res["rows"]:
        assert r["latency_fp32_ms"] > 0 and r["latency_int8_ms"] > 0
        assert r["metric_int8"] == here[r["label"]]["metric_int8"]  # the INT8 file's accuracy, whatever runs it
    assert {r["label"]: r["latency_fp32_ms"] for r in p.load_results()["rows"]} == {
        k: r["latency_fp32_ms"] for k, r in here.items()
    }
