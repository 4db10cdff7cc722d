"""The `dynastudio` CLI: the contract later tools rely on, and clean one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dynastudio.core.config import SCHEMA_VERSION
from helpers import tiny_sentences, write_tsv


def dyn(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "dynastudio.core.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _files_args(train, dev, model):
    return ["--model", model, "--train", train, "--dev", dev, "--text-columns", "sentence", "--label-column", "label"]


@pytest.mark.slow
def test_cli_end_to_end_on_a_tiny_model(tiny_model_dir, tiny_task_files, tmp_path):
    train, dev = tiny_task_files
    proj = tmp_path / "proj"
    out = dyn("new", proj, *_files_args(train, dev, tiny_model_dir), "--profile", "quick")
    assert out.returncode == 0, out.stderr
    assert "192" not in out.stdout or "train" in out.stdout
    # shrink the run through the project file the way a user would edit it
    cfg = json.loads((proj / "project.json").read_text())
    cfg["train"].update(
        batch_size=16, max_seq_length=32, teacher_epochs=2, width_epochs=1, depth_epochs=1, importance_examples=16
    )
    (proj / "project.json").write_text(json.dumps(cfg))
    out = dyn("run", proj, "--until", "rewire", "--max-train-examples", "64")
    assert out.returncode == 0, out.stderr
    assert "ran: finetune, rewire" in out.stdout
    status = dyn("status", proj).stdout
    assert "finetune          done" in status and "width             pending" in status
    imp = json.loads(dyn("importance", proj, "--json").stdout)
    assert len(imp["head"]) == 4 and len(imp["neuron"][0]) == 64
    assert "layer 3" in dyn("importance", proj).stdout
    # changing the profile after a stage ran would silently mix settings: refused
    assert_user_error(dyn("run", proj, "--profile", "paper"), "already ran")
    out = dyn("run", proj)
    assert out.returncode == 0, out.stderr
    report = json.loads(dyn("report", proj, "--json").stdout)
    assert len(report["rows"]) == 12
    for key in ("width_mult", "depth_mult", "metric", "value", "encoder_params", "total_params", "flops_rel"):
        assert key in report["rows"][0]
    text = dyn("report", proj).stdout
    assert "0.25" in text and "enc params" in text
    assert "nothing to do" in dyn("run", proj).stdout


@pytest.mark.parametrize(
    "case",
    ["missing_file", "missing_column", "empty", "unknown_label", "bad_bytes", "short_row"],
)
def test_new_refuses_bad_data(cli, case, tiny_model_dir, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", tiny_sentences(20, 0))
    dev = write_tsv(tmp_path / "dev.tsv", tiny_sentences(10, 1))
    label_col, needles = "label", []
    if case == "missing_file":
        dev = tmp_path / "nope.tsv"
        needles = ["nope.tsv"]
    elif case == "missing_column":
        label_col, needles = "polarity", ["polarity", "train.tsv"]
    elif case == "empty":
        dev.write_text("")
        needles = ["dev.tsv"]
    elif case == "unknown_label":
        with dev.open("a") as f:
            f.write("a strange row\t7\n")
        needles = ["dev.tsv", "line 12", "7"]
    elif case == "bad_bytes":
        with train.open("ab") as f:
            f.write(b"caf\xe9 au lait\t1\n")
        needles = ["train.tsv", "line 22", "UTF-8"]
    elif case == "short_row":
        with train.open("a") as f:
            f.write("no label here\n")
        needles = ["train.tsv", "line 22"]
    proj = tmp_path / "proj"
    proc = cli(
        "new",
        proj,
        "--model",
        tiny_model_dir,
        "--train",
        train,
        "--dev",
        dev,
        "--text-columns",
        "sentence",
        "--label-column",
        label_col,
    )
    assert_user_error(proc, *needles)
    assert not (proj / "project.json").exists()


def test_unsupported_model_is_named(cli, tmp_path, tiny_task_files):
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(folder)
    proc = cli("new", tmp_path / "p", *_files_args(*tiny_task_files, folder))
    assert_user_error(proc, "gpt2", "BERT")


def test_unknown_model_id_offline(cli, tmp_path, tiny_task_files):
    proc = cli("new", tmp_path / "p", *_files_args(*tiny_task_files, "no-such-user/no-such-model-xyz"))
    assert_user_error(proc, "no-such-user/no-such-model-xyz")


def test_not_a_project(cli, tmp_path):
    assert_user_error(cli("run", tmp_path), "not a DynaBERT Studio project")
    assert_user_error(cli("report", tmp_path), "dynastudio new")


def test_unknown_glue_task(cli, tmp_path):
    assert_user_error(cli("new", tmp_path / "p", "--model", "builtin:minilm", "--task", "sst3"), "sst3")


@pytest.mark.slow
def test_demo_project_is_created_from_the_builtin_model(tmp_path):
    proc = dyn("new", tmp_path / "demo", "--demo")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "demo" / "project.json").read_text())
    assert (
        cfg["model"] == "builtin:minilm" and cfg["data"]["kind"] == "demo" and cfg["schema_version"] == SCHEMA_VERSION
    )
    assert (tmp_path / "demo" / "tokenizer" / "tokenizer.json").is_file() or (
        tmp_path / "demo" / "tokenizer" / "vocab.txt"
    ).is_file()
    assert (tmp_path / "demo" / "cache" / "inputs.safetensors").is_file()  # tokenized once, at creation
    # the README's headless line runs twice: the demo is kept, not refused
    before = (tmp_path / "demo" / "project.json").stat().st_mtime_ns
    again = dyn("new", tmp_path / "demo", "--demo")
    assert again.returncode == 0 and "already holds the demo project" in again.stdout, again.stderr
    assert (tmp_path / "demo" / "project.json").stat().st_mtime_ns == before


class _EntryPoint:
    def __init__(self, name, load):
        self.name, self.load = name, load


def test_front_end_commands_come_from_entry_points(cli, monkeypatch):
    """`dynastudio gui` is the studio's: the engine finds it through the `dynastudio.commands` entry points."""
    import dynastudio.core.cli as cli_module

    said = []

    def register(sub):
        p = sub.add_parser("hello", help="a front end's command")
        p.add_argument("--who", default="world")
        p.set_defaults(func=lambda a: said.append(a.who) or 0)

    def missing_qt():
        raise ModuleNotFoundError("No module named 'PySide6'", name="PySide6")

    plugins = [_EntryPoint("hello", lambda: register), _EntryPoint("gui", missing_qt)]
    monkeypatch.setattr(cli_module, "entry_points", lambda group: plugins if group == "dynastudio.commands" else [])
    proc = cli("hello", "--who", "tester")
    assert proc.returncode == 0 and said == ["tester"], proc.stderr
    # a front end whose own dependencies are missing: its command says what to install, as a user error
    assert_user_error(cli("gui"), "PySide6", "pip install 'dynabert-studio[studio]'")


def test_installed_studio_adds_gui_without_loading_qt():
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "from dynastudio.core.cli import build_parser\n"
        "assert [e.value for e in entry_points(group='dynastudio.commands') if e.name == 'gui'] == ['dynastudio.studio.command:register']\n"
        "build_parser().parse_args(['gui', '--demo'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_new_guesses_columns_says_so_and_records_them(cli, tiny_model_dir, tmp_path):
    rows = "".join(
        f"is row {i} wet,row {i} is {'wet' if i % 2 else 'dry'} today,{'yes' if i % 2 else 'no'}\n" for i in range(12)
    )
    train = tmp_path / "train.csv"
    train.write_text("question,passage,label\n" + rows, encoding="utf-8")
    proc = cli("new", tmp_path / "p", "--model", tiny_model_dir, "--train", train, "--dev", train, "--profile", "quick")
    assert proc.returncode == 0, proc.stderr
    assert "guessed text and label columns: text = question + passage (a sentence pair), label = label" in proc.stderr
    data = json.loads((tmp_path / "p" / "project.json").read_text())["data"]
    assert data["text_columns"] == ["question", "passage"] and data["label_column"] == "label"

    unlabelled = tmp_path / "nolabel.csv"
    unlabelled.write_text(
        "question,passage\n" + "".join(",".join(r.split(",")[:2]) + "\n" for r in rows.splitlines()), encoding="utf-8"
    )
    proc = cli("new", tmp_path / "q", "--model", tiny_model_dir, "--train", unlabelled, "--dev", unlabelled)
    assert_user_error(proc, "nolabel.csv", "which column holds the labels", "--label-column")
    assert not (tmp_path / "q").exists()


def test_report_names_the_best_under_a_budget_from_the_command_line(tmp_path):
    """`python -m dynastudio.core.cli report DIR --budget-ms X` on hand-written files: no training, no torch needed."""
    from dynastudio.core.config import ProjectConfig

    root = tmp_path / "p"
    root.mkdir()
    (root / "project.json").write_text(ProjectConfig().to_json())
    rows = [("w1_d1", 1.0, 0.9, 8.0), ("w0.5_d1", 0.5, 0.8, 4.0)]
    (root / "results.json").write_text(
        json.dumps(
            {
                "task": "t",
                "metric": "accuracy",
                "model": "depth",
                "rows": [
                    {"label": k, "width_mult": w, "depth_mult": 1.0, "value": v, "flops_rel": w} for k, w, v, _ in rows
                ],
            }
        )
    )
    (root / "latency.json").write_text(
        json.dumps(
            {
                "setup": {"device": "Test CPU"},
                "rows": [
                    {"label": k, "width_mult": w, "depth_mult": 1.0, "sizes": {}, "values": {"latency_fp32_ms": ms}}
                    for k, w, _, ms in rows
                ],
            }
        )
    )
    proc = dyn("report", root, "--budget-ms", "5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        "best under 5 ms on this machine (Test CPU): w0.5_d1 (width 0.5, depth 1): accuracy 0.8000 at 4.00 ms"
    )
    assert_user_error(dyn("report", root, "--budget-ms", "3"), "nothing fits 3 ms", "w0.5_d1", "raise --budget-ms")
    assert_user_error(dyn("report", root, "--budget-ms", "5", "--device", "pi"), "no latency measured on device 'pi'")
    (root / "latency.json").unlink()
    assert_user_error(dyn("report", root, "--budget-ms", "5"), "no latency figures yet", f"dynastudio latency {root}")
