"""Export: every format writes a folder that reloads and matches PyTorch; folders are never clobbered; latency fills the grid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dynastudio.core import jobs
from dynastudio.core.cli import main
from dynastudio.core.dynamic import SubnetSpec
from dynastudio.core.errors import Cancelled, ConfigError, InternalError, UserError
from dynastudio.core.events import EventLog, ExportDone, LogMessage, StageEnded, StageStarted, StopToken, null_sink
from dynastudio.core.export.job import export_job
from dynastudio.core.export.targets import FORMATS, MODEL_FILES, PRESETS, resolve_format
from dynastudio.core.export.verify import ExportMismatchError
from dynastudio.core.extract import extract
from dynastudio.core.latency import LatencyRequest, latency_job
from dynastudio.core.prepare import new_project
from dynastudio.core.project import Project
from dynastudio.core.requests import ExportReport, ExportRequest
from helpers import exportable_project, make_tiny_model_dir, tiny_model, tiny_project_config


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_task_files) -> Project:
    """A project whose fine-tuned model is a tiny random BERT (no training needed to export it)."""
    return exportable_project(tmp_path_factory.mktemp("export"), *tiny_task_files)


def export(project: Project, spec, target: str, out: Path, events=null_sink, stop=None, **options) -> ExportReport:
    return export_job(
        project, ExportRequest(spec[0], spec[1], target, str(out), **options), events, stop or StopToken()
    )


def _copy(project: Project, dest: Path) -> Project:
    shutil.copytree(project.root, dest)
    return Project.open(dest)


def _feeds(vocab: int, names: list[str]):
    """Two shapes, one row padded: what a user would feed."""
    out = []
    for batch, seq in ((2, 9), (5, 23)):
        g = np.random.default_rng(batch)
        ids = g.integers(5, vocab, size=(batch, seq), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[0, seq // 2 :] = 0
        ids[0, seq // 2 :] = 0
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        out.append({k: f[k] for k in names})
    return out


def _no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


@pytest.mark.parametrize("choice", ["onnx", "onnx-int8", "gpu-server", "torchscript", "hf"])
def test_every_format_exports_reloads_and_verifies(project, tmp_path, choice):
    fmt = PRESETS.get(choice, choice)
    out = tmp_path / "out"
    log = EventLog()
    rep = export(project, (0.5, 0.5), choice, out, events=log)

    names = {p.name for p in out.iterdir()}
    assert {MODEL_FILES[fmt], "README.md", "verification.json", "tokenizer_config.json"} <= names
    assert ("config.json" if fmt == "hf" else "dynabert_config.json") in names
    v = json.loads((out / "verification.json").read_text())
    assert v["passed"] is True and v["failure"] is None and rep.passed and rep.failure is None
    assert v["format"] == fmt and v["target"] == (choice if choice in PRESETS else None)
    assert v["subnet"]["layers"] == 2 and v["subnet"]["heads"] == 2 and v["probe"]["source"] == "dev set"
    assert len(v["probe"]["shapes"]) == 2 and v["probe"]["shapes"][0] != v["probe"]["shapes"][1]  # dynamic axes used
    readme = (out / "README.md").read_text()
    assert MODEL_FILES[fmt] in readme and "## Run it" in readme and "FAILED" not in readme
    if fmt in ("onnx-int8", "onnx-fp16"):
        assert v["dev"]["examples"] == 64 and 0.99 <= rep.agreement <= 1.0 and v["min_agreement"] == 0.99
    else:
        assert rep.max_abs_diff <= 1e-4 and rep.agreement is None and v["min_agreement"] is None
    assert log.of(ExportDone) == [ExportDone(str(out), fmt, rep.max_abs_diff, rep.agreement, True)]
    assert [e.stage for e in log.of(StageStarted)] == ["export"] and [e.stage for e in log.of(StageEnded)] == ["export"]
    _no_leftovers(tmp_path)

    # read it back on our own, at shapes the export never saw
    slim = extract(project, 0.5, 0.5)
    names_in = v["inputs"]
    for feed in _feeds(slim.config.vocab_size, names_in):
        with torch.no_grad():
            ref = slim(*(torch.from_numpy(feed[k]) for k in names_in)).numpy()
        if fmt.startswith("onnx"):
            import onnxruntime as ort

            sess = ort.InferenceSession(str(out / MODEL_FILES[fmt]), providers=["CPUExecutionProvider"])
            assert [i.shape for i in sess.get_inputs()] == [["batch", "sequence"]] * len(names_in)
            got = sess.run(None, feed)[0]
        elif fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, LibTorch still loads it
                module = torch.jit.load(str(out / MODEL_FILES[fmt]))
            got = module(*(torch.from_numpy(feed[k]) for k in names_in)).numpy()
        else:
            continue  # the HF folder has its own test, in a clean interpreter
        assert got.shape == ref.shape and got.dtype == np.float32
        tol = {"onnx-int8": 0.5, "onnx-fp16": 1e-2}.get(fmt, 1e-4)
        assert np.abs(got - ref).max() <= tol


@pytest.mark.slow
def test_int8_methods_per_token_by_default_dynamic_on_request(project, tmp_path, capsys):
    """The INT8 formats quantize each token's input on its own by default: a padded batch gives each row what it
    gives alone, so the dev check runs in batches; `--int8-method dynamic` gives onnxruntime's per-tensor file,
    checked one row at a time. Both verify and say which method they took; an unknown method is one line."""
    import onnx
    import onnxruntime as ort

    from dynastudio.core.export.runners import ORT_DISABLED_OPTIMIZERS

    files = {}
    for method in ("per-token", "dynamic"):
        out = tmp_path / method
        rep = export(project, (1.0, 1.0), "onnx-int8", out, int8_method=method)
        v = json.loads((out / "verification.json").read_text())
        assert rep.passed and v["quantization"]["method"] == method and v["quantization"]["path"] == "post-training"
        assert v["dev"]["rows_per_call"] == (32 if method == "per-token" else 1)
        assert ("range per token" in (out / "README.md").read_text()) == (method == "per-token")
        speed = v["quantization"]["speed"]  # timed against the fp32 file, which is not shipped
        assert speed["int8_ms"] > 0 and speed["fp32_ms"] > 0 and "1 thread" in speed["setup"]
        assert f"{speed['int8_ms']:.2f} ms" in (out / "README.md").read_text()
        assert not any(p.name.startswith(".") for p in out.iterdir()) and "model.onnx" not in v["files"]
        files[method] = out / MODEL_FILES["onnx-int8"]
    ops = {n.op_type for n in onnx.load(str(files["per-token"])).graph.node}
    assert {"QuantizeLinear", "MatMulIntegerToFloat"} <= ops and "DynamicQuantizeLinear" not in ops
    assert "MatMul" in ops  # the attention's two activation products stay fp32

    slim = extract(project, 1.0, 1.0)
    padded = _feeds(
        slim.config.vocab_size, json.loads((tmp_path / "dynamic" / "verification.json").read_text())["inputs"]
    )[1]
    shift = {}
    for method, path in files.items():
        sess = ort.InferenceSession(
            str(path), providers=["CPUExecutionProvider"], disabled_optimizers=ORT_DISABLED_OPTIMIZERS
        )
        batch = sess.run(None, padded)[0]
        n = int(padded["attention_mask"][0].sum())
        alone = sess.run(None, {k: v[:1, :n] for k, v in padded.items()})[0]
        shift[method] = float(np.abs(batch[:1] - alone).max())
    assert shift["per-token"] < 1e-5 and shift["dynamic"] > 1e-5, shift  # only the dynamic file depends on the batch

    base = ["export", str(project.root), "--width", "1", "--depth", "1", "--format", "onnx-int8"]
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "bad"), "--int8-method", "minmax"])
    assert "--int8-method" in capsys.readouterr().err
    # a method of another INT8 format: one line naming this format's
    with pytest.raises(
        ConfigError, match="int8_method 'static' is not one of onnx-int8's: choose one of per-token, dynamic$"
    ):
        export(project, (1.0, 1.0), "onnx-int8", tmp_path / "bad2", int8_method="static")
    with pytest.raises(ConfigError, match="int8_method 'typo': choose one of per-token, dynamic$"):
        export(project, (1.0, 1.0), "onnx-int8", tmp_path / "bad2", int8_method="typo")
    assert not (tmp_path / "bad2").exists()


def test_hf_folder_loads_without_the_project(project, tmp_path):
    out = tmp_path / "hf"
    export(project, (0.5, 1.0), "hf", out)
    assert (out / "modeling_dynabert.py").is_file() and json.loads((out / "config.json").read_text())["auto_map"]
    script = tmp_path / "load.py"
    script.write_text(
        "import json, sys\n"
        "sys.modules['dynastudio'] = None  # DynaBERT Studio must not be needed\n"
        "import torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "folder = sys.argv[1]\n"
        "tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)\n"
        "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "enc = tok(['the film was great', 'a dull boring plot and ugly acting'], padding=True, return_tensors='pt')\n"
        "with torch.no_grad():\n"
        "    out = model(**enc)\n"
        "assert sys.modules['dynastudio'] is None\n"
        "print(json.dumps({'cls': type(model).__name__, 'logits': out.logits.tolist(), 'ids': enc['input_ids'].tolist(),\n"
        "                  'mask': enc['attention_mask'].tolist()}))\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(out.resolve())],
        cwd=elsewhere,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cls"] == "DynaBertSlimForSequenceClassification"
    slim = extract(project, 0.5, 1.0)
    with torch.no_grad():
        ref = slim(torch.tensor(got["ids"]), torch.tensor(got["mask"]))
    assert torch.allclose(torch.tensor(got["logits"]), ref, atol=1e-5)


def test_existing_folder_asks_for_overwrite(project, tmp_path):
    out = tmp_path / "ts"
    export(project, (1.0, 1.0), "torchscript", out)
    (out / "marker").write_text("old")
    with pytest.raises(UserError, match="--overwrite"):
        export(project, (0.5, 1.0), "torchscript", out)
    assert (out / "marker").exists()
    rep = export(project, (0.5, 1.0), "libtorch", out, overwrite=True)
    assert not (out / "marker").exists() and rep.verification["subnet"]["width_mult"] == 0.5
    # --overwrite replaces earlier exports only, never an unrelated folder (or the project)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not an export folder"):
        export(project, (0.5, 1.0), "torchscript", other, overwrite=True)
    with pytest.raises(UserError):
        export(project, (0.5, 1.0), "torchscript", project.root, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious" and (project.root / "project.json").is_file()
    _no_leftovers(tmp_path)


def _shift_fp32_runner(monkeypatch, by: float = 3e-4) -> None:
    """The exported model, read back, answers `by` off PyTorch: what a broken exporter would do."""
    import dynastudio.core.export.verify as ex

    real = ex.runner

    def shifted(fmt, folder, strict=False):
        run = real(fmt, folder, strict)
        return lambda feed: run(feed) + by

    monkeypatch.setattr(ex, "runner", shifted)


def test_fp32_mismatch_is_an_internal_error_and_writes_nothing(project, tmp_path, monkeypatch):
    _shift_fp32_runner(monkeypatch)
    out = tmp_path / "bad"
    log = EventLog()
    with pytest.raises(InternalError, match=r"differs from PyTorch by 3\.0\de-04") as caught:
        export(project, (0.5, 1.0), "torchscript", out, events=log)
    assert not isinstance(caught.value, UserError)  # a bug of ours, never shown as the user's mistake
    err = caught.value
    assert isinstance(err, ExportMismatchError) and err.format == "torchscript"  # typed, as optimum's AtolError
    assert err.max_abs_diff == pytest.approx(3e-4, rel=0.05) and err.tolerance == 1e-4
    assert len(err.shape) == 2 and min(err.shape) > 0  # the (batch, sequence) it was found at
    assert str(list(err.shape)) in str(err)
    assert not out.exists() and log.of(ExportDone) == []
    _no_leftovers(tmp_path)


def test_fp32_tolerance_is_what_decides(project, tmp_path, monkeypatch):
    """No shifted runner: with a tolerance below onnxruntime's real rounding difference the same check fails."""
    import dynastudio.core.export.verify as ex

    monkeypatch.setattr(ex, "FP32_TOLERANCE", 1e-12)
    with pytest.raises(InternalError, match=r"onnx export of w0.5_d1 differs from PyTorch by .* \(> 1e-12\)"):
        export(project, (0.5, 1.0), "onnx", tmp_path / "strict")
    assert not (tmp_path / "strict").exists()
    _no_leftovers(tmp_path)


def test_cli_internal_error_exits_1_with_a_traceback(project, tmp_path, monkeypatch, capsys):
    _shift_fp32_runner(monkeypatch)
    out = tmp_path / "bad"
    rc = main(
        ["export", str(project.root), "--width", "0.5", "--depth", "1", "--format", "torchscript", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert rc == 1, err
    # the typed error (an InternalError) with its traceback
    assert "Traceback (most recent call last)" in err and "ExportMismatchError" in err and "differs from PyTorch" in err
    assert "internal error" in err.splitlines()[-1] and not out.exists()


@pytest.fixture(scope="module")
def tied_project(project, tmp_path_factory) -> Project:
    """A model whose two logits nearly tie on every dev row (they differ by ~1e-5, centred on zero): the rounding
    of an INT8 export then decides the class, so its dev agreement with PyTorch is far below 100%."""
    from dynastudio.core.evaluate import predict
    from dynastudio.core.prepare import prepare_inputs

    p = _copy(project, tmp_path_factory.mktemp("tied") / "proj")
    model = tiny_model(seed=11)
    inputs = prepare_inputs(p)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight[1] = model.classifier.weight[0] + 1e-2 * torch.randn(
            model.config.hidden_size, generator=g
        )
        model.classifier.bias[1] = model.classifier.bias[0]
        logits = predict(model, inputs.dev, SubnetSpec(), "keep-last", 32, inputs.pad_id, "cpu")
        model.classifier.bias[1] -= float(np.median(logits[:, 1] - logits[:, 0]))
    p.save_model("teacher", model)
    return p


def test_int8_below_min_agreement_is_written_but_failed(tied_project, tmp_path):
    out = tmp_path / "int8"
    log = EventLog()
    rep = export(tied_project, (1.0, 1.0), "onnx-int8", out, events=log, min_agreement=1.0)
    assert 0.0 < rep.agreement < 1.0 and rep.dev_examples == 64
    assert (
        rep.passed is False
        and "below the required 100%" in rep.failure
        and f"{100 * rep.agreement:.2f}%" in rep.failure
    )
    # written, for inspection, and marked failed everywhere a user would look
    assert (out / MODEL_FILES["onnx-int8"]).is_file() and rep.path == str(out)
    v = json.loads((out / "verification.json").read_text())
    assert v["passed"] is False and v["failure"] == rep.failure and v["min_agreement"] == 1.0
    assert v["dev"]["agreement"] == rep.agreement
    readme = (out / "README.md").read_text()
    assert "FAILED" in readme and rep.failure in readme
    assert log.of(ExportDone) == [ExportDone(str(out), "onnx-int8", rep.max_abs_diff, rep.agreement, False)]
    assert any(e.level == "error" and rep.failure in e.text for e in log.of(LogMessage))
    assert [e.stage for e in log.of(StageEnded)] == ["export"]
    _no_leftovers(tmp_path)


@pytest.mark.slow
def test_cli_export_below_min_agreement_exits_1(tied_project, tmp_path, capsys):
    base = ["export", str(tied_project.root), "--width", "1", "--depth", "1", "--format", "onnx-int8"]
    assert main(base + ["--out", str(tmp_path / "strict"), "--min-agreement", "100.0"]) == 1
    captured = capsys.readouterr()
    assert "FAILED its check" in captured.err and "below the required 100%" in captured.err
    assert "Traceback" not in captured.err and "verified: passed" not in captured.out
    v = json.loads((tmp_path / "strict" / "verification.json").read_text())
    assert v["passed"] is False and v["min_agreement"] == 1.0
    # the percent is what decides: at the measured agreement (rounded down) the same export passes
    percent = np.floor(100 * v["dev"]["agreement"] * 1000) / 1000
    assert main(base + ["--out", str(tmp_path / "lenient"), "--min-agreement", str(percent)]) == 0
    captured = capsys.readouterr()
    assert "verified: passed" in captured.out and "FAILED" not in captured.err
    v = json.loads((tmp_path / "lenient" / "verification.json").read_text())
    assert v["passed"] is True and v["min_agreement"] == pytest.approx(percent / 100)
    assert "FAILED" not in (tmp_path / "lenient" / "README.md").read_text()


def test_the_export_job_names_every_format_and_the_targets_need_no_torch():
    import re

    doc = export_job.__doc__ or ""
    missing = [f for f in FORMATS if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", doc)]
    assert not missing, f"export_job's docstring does not name {missing}"
    # the CLI's parser and the studio read the formats and presets without loading the engine
    code = "import sys; import dynastudio.core.export.targets; assert 'torch' not in sys.modules, 'torch was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_formats_and_presets_resolve():
    assert {PRESETS[p] for p in PRESETS} <= set(FORMATS)
    assert resolve_format("desktop-cpu") == ("openvino", "desktop-cpu") and resolve_format("intel-cpu")[0] == "openvino"
    assert resolve_format("android") == ("ort-int8", "android") and resolve_format("ios")[0] == "coreml"
    assert resolve_format("mobile-arm") == ("ort-int8", "android")  # the earlier name still works
    assert resolve_format("gpu-server")[0] == "onnx-fp16" and resolve_format("HF") == ("hf", None)
    assert resolve_format("arm-linux")[0] == "onnx-int8"
    with pytest.raises(ConfigError, match="targets are"):
        resolve_format("tflite")


def test_cli_export_and_its_user_errors(project, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["export", str(project.root), "--width", "0.5", "--depth", "1", "--target", "libtorch", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "torchscript (target libtorch)" in printed and "max abs diff" in printed
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    broken = _copy(project, tmp_path / "broken")
    w = broken.model_dir("teacher") / "model.safetensors"
    w.write_bytes(b"\0" * 64)
    assert (
        main(
            [
                "export",
                str(broken.root),
                "--width",
                "1",
                "--depth",
                "1",
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupted" in err[0] and "model.safetensors" in err[0]
    assert (
        main(
            [
                "export",
                str(project.root),
                "--width",
                "1.5",
                "--depth",
                "1",
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "(0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_latency_and_evaluate_fill_the_grid_in_either_order(project, tmp_path, capsys):
    """results.json has one writer (evaluate), latency.json another (latency); load_results joins them."""
    p = _copy(project, tmp_path / "lat")
    jobs.run("evaluate", p, jobs.StageRequest())
    evaluated = {r["label"]: r for r in json.loads(p.results_path.read_text())["rows"]}
    assert set(evaluated) == {"w1_d1", "w0.5_d1", "w1_d0.5", "w0.5_d0.5"}
    assert not [k for r in evaluated.values() for k in r if k.startswith(("latency_", "size_onnx_"))]
    evaluation_bytes = p.results_path.read_bytes()
    # a stale measurement from another setup: the new one replaces it whole
    p.save_latency(
        {
            "setup": {"device": "elsewhere", "seq": 99},
            "rows": [
                {
                    "label": "w1_d1",
                    "width_mult": 1.0,
                    "depth_mult": 1.0,
                    "sizes": {},
                    "values": {"latency_fp16_ms": 9.0},
                }
            ],
        }
    )

    args = [
        "latency",
        str(p.root),
        "--batch",
        "2",
        "--seq",
        "16",
        "--threads",
        "1",
        "--formats",
        "fp32,int8",
        "--runs",
        "3",
        "--warmup",
        "1",
    ]
    assert main(args) == 0
    assert "[4/4]" in capsys.readouterr().out
    assert p.results_path.read_bytes() == evaluation_bytes  # latency never touches results.json
    res = p.load_results()
    s = res["latency_setup"]
    assert (s["threads"], s["batch"], s["seq"], s["runs"]) == (1, 2, 16, 3) and s["device"] and s["onnxruntime"]
    rows = {r["label"]: r for r in res["rows"]}
    assert set(rows) == set(evaluated)
    for label, r in rows.items():
        for key in (
            "latency_fp32_ms",
            "latency_fp32_p90_ms",
            "latency_int8_ms",
            "size_onnx_fp32_mb",
            "size_onnx_int8_mb",
        ):
            assert r[key] > 0, key
        assert r["latency_fp32_p90_ms"] >= r["latency_fp32_ms"] and "flops_rel" in r and "total_params" in r
        assert r["value"] == evaluated[label]["value"] and r["metric"] == "accuracy"
        assert "latency_fp16_ms" not in r
        assert 0 <= r["metric_int8"] <= 1 and "metric_fp32" not in r  # the INT8 file's own dev accuracy
    assert rows["w0.5_d1"]["size_onnx_fp32_mb"] < rows["w1_d1"]["size_onnx_fp32_mb"]
    assert main(["report", str(p.root)]) == 0
    report = capsys.readouterr().out
    assert (
        "fp32_ms" in report
        and "int8_ms" in report
        and "onnx_int8_mb" in report
        and "1 thread(s), batch 2, seq 16" in report
    )

    # the other order: the latency numbers are there first, the evaluation comes after and keeps them
    q = _copy(p, tmp_path / "lat_first")
    q.results_path.unlink()
    latency_bytes = q.latency_path.read_bytes()
    early = {r["label"]: r for r in q.load_results()["rows"]}
    assert set(early) == set(evaluated) and all("value" not in r and r["latency_fp32_ms"] > 0 for r in early.values())
    jobs.run("evaluate", q.root, jobs.StageRequest())
    assert q.latency_path.read_bytes() == latency_bytes  # evaluate never touches latency.json
    joined = q.load_results()
    assert joined["latency_setup"] == res["latency_setup"] and joined["metric"] == "accuracy"
    for r in joined["rows"]:
        assert (
            r["value"] == evaluated[r["label"]]["value"] and r["latency_int8_ms"] == rows[r["label"]]["latency_int8_ms"]
        )


def test_old_results_with_latency_inside_are_migrated_on_open(project, tmp_path, capsys):
    row = lambda label, w, value, ms: {
        "label": label,
        "width_mult": w,
        "depth_mult": 1.0,
        "metric": "accuracy",
        "value": value,
        "total_params": int(w * 1000),
        "flops_rel": w,
        "latency_fp32_ms": ms,
        "latency_fp32_p90_ms": ms * 1.2,
        "size_onnx_fp32_mb": w * 2,
    }
    setup = {"device": "Old CPU 3000", "threads": 1, "batch": 1, "seq": 128, "runs": 50}
    old = {
        "task": "train",
        "metric": "accuracy",
        "model": "teacher",
        "depth_rule": "keep-last",
        "dev_examples": 64,
        "rows": [row("w1_d1", 1.0, 0.75, 2.0), row("w0.5_d1", 0.5, 0.625, 1.0)],
        "latency_setup": setup,
    }

    p = _copy(project, tmp_path / "old")
    p.results_path.write_text(json.dumps(old))
    assert not p.latency_path.exists()
    opened = Project.open(p.root)
    on_disk = json.loads(p.results_path.read_text())
    assert "latency_setup" not in on_disk
    assert on_disk["rows"] == [
        {k: v for k, v in r.items() if not k.startswith(("latency_", "size_onnx_"))} for r in old["rows"]
    ]
    latency = json.loads(p.latency_path.read_text())
    assert latency["setup"] == setup
    assert {r["label"]: r["values"] for r in latency["rows"]} == {
        r["label"]: {k: v for k, v in r.items() if k.startswith(("latency_", "size_onnx_"))} for r in old["rows"]
    }
    # the joined grid reads as the old file did
    res = opened.load_results()
    assert res == old
    # migrated once: opening again changes nothing
    files = (p.results_path.read_bytes(), p.latency_path.read_bytes())
    assert Project.open(p.root).load_results() == old
    assert (p.results_path.read_bytes(), p.latency_path.read_bytes()) == files
    assert main(["report", str(p.root)]) == 0
    assert "Old CPU 3000" in capsys.readouterr().out

    # a newer latency.json beside an old results.json wins; the old numbers are dropped from results.json
    q = _copy(project, tmp_path / "both")
    q.results_path.write_text(json.dumps(old))
    newer = {
        "setup": {"device": "New CPU", "seq": 32},
        "rows": [
            {"label": "w1_d1", "width_mult": 1.0, "depth_mult": 1.0, "sizes": {}, "values": {"latency_fp32_ms": 5.0}}
        ],
    }
    q.save_latency(newer)
    res = Project.open(q.root).load_results()
    assert json.loads(q.latency_path.read_text()) == newer and "latency_setup" not in json.loads(
        q.results_path.read_text()
    )
    assert res["latency_setup"] == newer["setup"]
    rows = {r["label"]: r for r in res["rows"]}
    assert rows["w1_d1"]["latency_fp32_ms"] == 5.0 and rows["w1_d1"]["value"] == 0.75
    assert "latency_fp32_ms" not in rows["w0.5_d1"] and rows["w0.5_d1"]["value"] == 0.625


def test_latency_job_stops_and_checks_settings(project):
    stop = StopToken()
    stop.set()
    with pytest.raises(Cancelled):
        latency_job(project, LatencyRequest(), EventLog(), stop)
    with pytest.raises(Cancelled):
        jobs.run("latency", project, LatencyRequest(), stop=stop)
    with pytest.raises(ConfigError, match="fp32, int8, fp16"):
        latency_job(project, LatencyRequest(formats=("fp64",)), EventLog(), StopToken())
    with pytest.raises(TypeError, match="LatencyRequest"):
        jobs.run("latency", project, jobs.StageRequest())
    assert not project.latency_path.exists() and not project.results_path.exists()


def test_latency_sequence_defaults_to_the_projects_max_seq_length(project, monkeypatch, capsys):
    """No --seq: the project's max_seq_length (32 here), in the CLI and in the job; an explicit one is kept."""
    import dynastudio.core.latency as lat

    asked = []

    def fake_child(request, threads, on_message, stop):
        asked.append(request["settings"]["seq"])
        raise Cancelled("stopped by the test")

    monkeypatch.setattr(lat, "_run_child", fake_child)
    assert main(["latency", str(project.root), "--runs", "3"]) == 130
    assert "sequence 32," in capsys.readouterr().out
    for request in (LatencyRequest(), LatencyRequest(seq=16)):
        with pytest.raises(Cancelled):
            jobs.run("latency", project, request)
    assert asked == [32, 32, 16] and project.config.train.max_seq_length == 32
    assert not project.latency_path.exists()


def test_latency_job_reports_its_stage_and_writes_only_latency_json(project, tmp_path, monkeypatch):
    """The job's side of the child protocol (the real child runs in the test above): events and its one file."""
    import dynastudio.core.latency as lat
    from dynastudio.core.events import FormatLatency, LatencyMeasured, StageProgress

    p = _copy(project, tmp_path / "p")
    specs = ((1.0, 1.0), (0.5, 0.5))

    def fake_child(request, threads, on_message, stop):
        assert request["specs"] == [list(s) for s in specs] and request["settings"]["formats"] == ["fp32", "int8"]
        on_message({"setup": {"device": "test CPU", "seq": request["settings"]["seq"]}})
        for i, _ in enumerate(request["specs"]):
            on_message({"progress": f"exported {i + 1}"})
        on_message({"progress": "timing round 1/1 done"})
        for i, _ in enumerate(request["specs"]):
            on_message({"progress": f"dev accuracy per precision: {i + 1}/{len(specs)}"})
        for i, (w, d) in enumerate(request["specs"]):
            values = {
                f"{k}_{f}{x}": float(i + 1) * (2 if f == "int8" else 1)
                for f in ("fp32", "int8")
                for k, x in (("latency", "_ms"), ("latency", "_p90_ms"), ("size_onnx", "_mb"))
            }
            values["metric_int8"] = 0.5 + i / 10
            on_message({"row": {"spec": [w, d], "sizes": {"total_params": 10 * (i + 1)}, "values": values}})

    monkeypatch.setattr(lat, "_run_child", fake_child)
    log = EventLog()
    out = jobs.run("latency", p, LatencyRequest(formats=("fp32", "int8"), runs=3, specs=specs), log)
    assert [type(e).__name__ for e in log.events if isinstance(e, (StageStarted, StageEnded))] == [
        "StageStarted",
        "StageEnded",
    ]
    total = log.of(StageStarted)[0].total_steps
    assert total == 2 * len(specs) + 1 and [e.done for e in log.of(StageProgress)] == list(range(1, total + 1))
    measured = log.of(LatencyMeasured)
    assert [(e.label, e.index, e.total) for e in measured] == [("w1_d1", 1, 2), ("w0.5_d0.5", 2, 2)]
    assert measured[1].formats == (FormatLatency("fp32", 2.0, 2.0, 2.0), FormatLatency("int8", 4.0, 4.0, 4.0))
    assert not p.results_path.exists()  # latency writes latency.json only
    saved = json.loads(p.latency_path.read_text())
    assert saved["setup"]["device"] == "test CPU" and saved["setup"]["seq"] == 32 and len(saved["rows"]) == 2
    assert out["setup"] == saved["setup"] and out["rows"][0]["label"] == "w1_d1"
    rows = {r["label"]: r for r in p.load_results()["rows"]}
    assert rows["w0.5_d0.5"]["latency_int8_ms"] == 4.0 and rows["w0.5_d0.5"]["total_params"] == 20
    assert rows["w0.5_d0.5"]["metric_int8"] == 0.6  # the INT8 point's own dev metric


def test_roberta_onnx_export_and_fp16_embedding_tables(tmp_path):
    """RoBERTa (position ids counted over non-pad tokens) exports with dynamic axes; big lookup tables can go fp16.

    Tiny models fall under the size threshold of the INT8 recipe's fp16 tables, so it is forced here.
    """
    import onnx
    import onnxruntime as ort

    from dynastudio.core.dynamic import SubnetSpec
    from dynastudio.core.export.onnx import export_onnx
    from dynastudio.core.export.quantize import compact_lookup_tables
    from dynastudio.core.extract import extract_from_model

    slim = extract_from_model(tiny_model("roberta", seed=3), SubnetSpec(0.5, 0.5), "keep-last")
    names = ["input_ids", "attention_mask"]
    src = export_onnx(slim, tmp_path / "m.onnx", names)
    compact_lookup_tables(src, tmp_path / "h.onnx", external=False, tables="fp16", min_elements=500)
    m = onnx.load(str(tmp_path / "h.onnx"))
    assert any(n.op_type == "Cast" and n.input[0].endswith("_fp16") for n in m.graph.node)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 and tuple(i.dims) == (33, 32) for i in m.graph.initializer)
    fp32 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    half_tables = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    for feed in _feeds(slim.config.vocab_size, names):
        feed["input_ids"][0, 4:] = 1  # RoBERTa's pad id: those positions keep the padding position
        with torch.no_grad():
            ref = slim(*(torch.from_numpy(feed[k]) for k in names)).numpy()
        assert np.abs(fp32.run(None, feed)[0] - ref).max() <= 1e-4
        assert np.abs(half_tables.run(None, feed)[0] - ref).max() < 1e-2


def test_latency_before_any_training_uses_the_base_model(tmp_path, tiny_task_files):
    """Latency depends only on shapes: a project still training its teacher can be measured already."""
    from dynastudio.core.latency import model_for_latency

    p = new_project(tmp_path / "p", tiny_project_config(make_tiny_model_dir(tmp_path / "m"), *tiny_task_files))
    model, name = model_for_latency(p)
    assert name.startswith("base") and model.config.num_labels == 2 and model.config.num_hidden_layers == 4


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8", "hf"])
def test_export_folders_follow_the_ecosystem_layout_and_hold_no_local_path(project, tmp_path, fmt):
    """ONNX folders carry config.json with the labels; the output is `logits`; no file records where it was made."""
    import onnx
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    export(project, (0.5, 0.5), fmt, out)
    here = [str(project.root.parent), str(tmp_path), str(Path(__file__).resolve().parents[1])]
    for f in out.iterdir():
        data = f.read_bytes()
        found = [p for p in here if p.encode() in data]
        assert not found, f"{f.name} holds {found}"
    if fmt == "hf":
        return
    cfg = json.loads((out / "config.json").read_text())
    task = json.loads((project.root / "task.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["num_labels"] == len(cfg["id2label"]) == len(task["labels"])
    assert {v: int(k) for k, v in cfg["id2label"].items()} == cfg["label2id"]
    assert [cfg["id2label"][str(i)] for i in range(cfg["num_labels"])] == task["labels"]  # the task's own names
    assert cfg["dynabert"]["width_mult"] == 0.5 and cfg["num_hidden_layers"] == len(cfg["dynabert"]["kept_layers"])
    model = onnx.load(str(out / MODEL_FILES[fmt]))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not any(n.metadata_props for n in model.graph.node)
    AutoTokenizer.from_pretrained(str(out))  # the folder reads as a tokenizer folder, config.json included


# ---- device kits ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def device_venv(tmp_path_factory) -> Path:
    """What a device has: Python with numpy and onnxruntime, and nothing of this project (no torch)."""
    import subprocess
    import sys
    from importlib.metadata import version

    venv = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pins = [f"numpy=={version('numpy')}", f"onnxruntime=={version('onnxruntime')}"]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *pins], check=True, capture_output=True)
    return py


@pytest.mark.slow
def test_device_kit_runs_on_a_bare_device_and_its_results_import_per_device(project, tmp_path, device_venv, capsys):
    import subprocess

    from dynastudio.core import cli
    from dynastudio.core.devicekit import DeviceKitRequest, device_kit_job

    p = _copy(project, tmp_path / "p")
    kit = tmp_path / "kit"
    out = device_kit_job(
        p, DeviceKitRequest(str(kit), ((1.0, 1.0), (0.5, 0.5)), ("fp32", "int8")), null_sink, StopToken()
    )
    assert out["cells"] == ["w1_d1", "w0.5_d0.5"]
    assert sorted(q.name for q in (kit / "models" / "w0.5_d0.5").iterdir()) == ["model.onnx", "model_int8.onnx"]
    assert str(tmp_path).encode() not in (kit / "kit.json").read_bytes()

    # on the "device": its own interpreter, no torch, run from another folder
    assert subprocess.run([str(device_venv), "-c", "import torch"], capture_output=True).returncode != 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = subprocess.run(
        [str(device_venv), str(kit / "run_kit.py"), "--runs", "3", "--warmup", "1", "--device", "test board"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    result = kit / "latency-test_board.json"
    measured = json.loads(result.read_text())
    assert measured["setup"]["device"] == "test board" and measured["setup"]["runtime"].startswith("onnxruntime ")
    assert [r["label"] for r in measured["rows"]] == ["w1_d1", "w0.5_d0.5"]
    assert all(r["values"]["latency_int8_ms"] > 0 for r in measured["rows"])

    assert cli.main(["latency", str(p.root), "--import", str(result)]) == 0
    grid = p.load_results(device="test board")
    rows = {r["label"]: r for r in grid["rows"]}
    assert rows["w0.5_d0.5"]["latency_fp32_ms"] == measured["rows"][1]["values"]["latency_fp32_ms"]
    assert grid["latency_setup"]["device"] == "test board" and p.load_results()["latency_devices"] == ["test board"]
    assert cli.main(["report", str(p.root), "--device", "test board"]) == 0
    assert "test board" in capsys.readouterr().out

    # a broken file is one line naming the file and the field; the project's latency.json is untouched
    before = p.latency_path.read_text()
    bad = tmp_path / "bad.json"
    measured["rows"][0]["values"]["latency_fp32_ms"] = -1
    bad.write_text(json.dumps(measured))
    assert cli.main(["latency", str(p.root), "--import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "rows[0].values.latency_fp32_ms" in err
    bad.write_text("{}")
    assert cli.main(["latency", str(p.root), "--import", str(bad)]) == 2
    assert "'kind'" in capsys.readouterr().err
    assert p.latency_path.read_text() == before
    assert cli.main(["report", str(p.root), "--device", "phone"]) == 2
    assert "known: test board" in capsys.readouterr().err
