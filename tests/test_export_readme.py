"""An export folder's README: its Python snippets run where a user runs them; its labels and sizes say something."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dynastudio.core.events import StopToken, null_sink
from dynastudio.core.export.job import export_job
from dynastudio.core.export.readme import readme
from dynastudio.core.project import Project
from dynastudio.core.requests import ExportRequest
from helpers import exportable_project


def _record(fmt: str = "onnx", model_file: str = "model.onnx", files: dict | None = None, size_mb: float = 0.1) -> dict:
    """What verification.json holds, as much of it as the README reads."""
    return {
        "format": fmt,
        "model_file": model_file,
        "inputs": ["input_ids", "attention_mask"],
        "subnet": {
            "width_mult": 0.5,
            "depth_mult": 0.75,
            "depth_rule": "paper",
            "layers": 9,
            "heads": 6,
            "neurons": 1536,
            "kept_layers": [0, 1, 2],
            "params": 1000,
        },
        "source": {"project": "demo", "model": "student"},
        "probe": {"source": "dev set", "shapes": [[16, 12], [3, 17]]},
        "max_abs_diff": 1e-6,
        "passed": True,
        "dev": None,
        "vocabulary": None,
        "size_mb": size_mb,
        "files": files if files is not None else {model_file: int(size_mb * 1e6)},
    }


def _slim(id2label: dict, problem_type: str | None = "single_label_classification"):
    n = max(1, len(id2label))
    return SimpleNamespace(
        config=SimpleNamespace(hidden_size=768, num_labels=n, id2label=id2label, problem_type=problem_type)
    )


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


# ---- labels and sizes: fast, on a hand-made record -------------------------------------------------
def test_labels_that_are_only_their_indices_are_said_plainly():
    labels = _line(readme(_record(), _slim({0: "0", 1: "1"}), "w0.5_d0.75-onnx"), "- Labels")
    assert "0: 0" not in labels
    assert "2 classes" in labels and "named 0 and 1 in the training data" in labels


def test_named_labels_are_listed_index_to_name():
    labels = _line(readme(_record(), _slim({0: "negative", 1: "positive", 2: "neutral"}), "x"), "- Labels")
    assert "3 classes" in labels and "0 -> `negative`, 1 -> `positive`, 2 -> `neutral`" in labels
    # numbers that are not their own indices (1-3 stars) are names, listed as such
    labels = _line(readme(_record(), _slim({0: "1", 1: "2", 2: "3"}), "x"), "- Labels")
    assert "0 -> `1`, 1 -> `2`, 2 -> `3`" in labels and "their own indices" not in labels
    labels = _line(readme(_record(), _slim({0: "LABEL_0", 1: "LABEL_1"}), "x"), "- Labels")
    assert "no names" in labels


def test_regression_says_one_score():
    text = readme(_record(), _slim({0: "LABEL_0"}, problem_type="regression"), "x")
    assert "one score per text (regression)" in text and "LABEL_0" not in text


def test_openvino_lists_the_xml_and_the_bin_each_with_its_own_size():
    files = {"openvino_model.xml": 193_000, "openvino_model.bin": 62_500_000, "tokenizer.json": 700_000}
    text = readme(_record("openvino", "openvino_model.xml", files, 62.693), _slim({0: "0", 1: "1"}), "x")
    line = _line(text, "- Model file")
    assert "`openvino_model.xml` (193.0 kB" in line and "`openvino_model.bin` (62.5 MB" in line
    assert "62.7 MB in all" in line and "xml` (62.7 MB)" not in line


def test_onnx_external_data_is_listed_beside_the_graph():
    files = {"model.onnx": 1_200_000, "model.onnx.data": 2_400_000_000}
    line = _line(readme(_record(files=files, size_mb=2401.2), _slim({0: "0", 1: "1"}), "x"), "- Model file")
    assert "`model.onnx` (1.2 MB, the graph)" in line and "`model.onnx.data` (2.40 GB, the weights)" in line


def test_a_folder_name_with_quotes_still_makes_valid_python():
    text = readme(_record(), _slim({0: "0", 1: "1"}), 'my "best" model\\')
    for block in _python_blocks(text):
        ast.parse(block)


# ---- the snippets, run for real from inside the folder and from the folder above ----------------
@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_task_files) -> Project:
    return exportable_project(tmp_path_factory.mktemp("readme"), *tiny_task_files)


def _run(code: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """A pasted snippet, run offline in a fresh interpreter; it then prints what it computed as JSON."""
    probe = (
        "\nimport json as _j, numpy as _np\n"
        "print('LOGITS', _j.dumps(_np.asarray(logits.tolist()).tolist()) if 'logits' in dir() else None)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code + probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "hf", "ort", "openvino"])
def test_the_readme_snippets_run_from_inside_the_folder_and_from_above_it(project, tmp_path, fmt):
    if fmt == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    out = tmp_path / "exports" / f"w0.5_d0.5-{fmt}"
    out.parent.mkdir()
    export_job(project, ExportRequest(0.5, 0.5, fmt, str(out)), null_sink, StopToken())
    text = (out / "README.md").read_text()
    blocks = _python_blocks(text)
    assert blocks and all(f'"{out.name}"' in b for b in blocks)
    for code in blocks:
        results = {}
        for where in (out, out.parent):  # inside the folder, then from the one above it
            done = _run(code, where, tmp_path / "hf-home")
            assert done.returncode == 0, f"from {where.name}: {done.stderr[-2000:]}"
            assert "huggingface.co" not in done.stderr
            results[where] = done.stdout
        assert results[out] == results[out.parent]  # the same model both times
        last = results[out].splitlines()[-1]
        if "pipeline(" in code:
            assert "'label'" in results[out]
        else:
            logits = json.loads(last.removeprefix("LOGITS "))
            assert len(logits) == 2 and all(len(row) == 2 for row in logits)

    # the sizes are the files' own, and the labels are said in words
    if fmt == "openvino":
        kb = {p: f"({(out / p).stat().st_size / 1e3:.1f} kB" for p in ("openvino_model.xml", "openvino_model.bin")}
        line = _line(text, "- Model file")
        assert all(f"`{p}` {s}" in line for p, s in kb.items())
    assert "named 0 and 1 in the training data" in _line(text, "- Labels")
