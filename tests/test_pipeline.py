"""End-to-end engine: a tiny project through every stage, losses going down, cancel then resume."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynastudio.core import jobs
from dynastudio.core.config import STAGES
from dynastudio.core.data.batching import iterate_batches
from dynastudio.core.data.encoding import encode
from dynastudio.core.data.task import load_task_data
from dynastudio.core.distill import LoopSettings, distill_step, get_lr, soft_cross_entropy, train_loop
from dynastudio.core.dynamic import SubnetSpec, subnet_grid
from dynastudio.core.errors import Cancelled, DataError, ProjectError
from dynastudio.core.events import (
    CheckpointSaved,
    EvalEnded,
    EventLog,
    ImportanceReady,
    LogMessage,
    StageEnded,
    StageProgress,
    StageStarted,
    StepEnded,
    StopToken,
)
from dynastudio.core.models import load_tokenizer
from dynastudio.core.prepare import cache_key, new_project, prepare_inputs, split_rows
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest, RunResult
from dynastudio.core.store import TaskInfo, read_task
from helpers import stopping_at, tiny_project_config

CORE = Path(__file__).resolve().parents[1] / "core"


def run_pipeline(project, events=None, stop=None, until=None) -> RunResult:
    return jobs.run("run", project, RunRequest(until=until), events or EventLog(), stop)


def test_get_lr_warmup_and_decay():
    assert get_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert get_lr(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert get_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert get_lr(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert get_lr(100, 100, 1.0, 0) == 0.0


def test_soft_cross_entropy_is_minimal_at_the_teacher():
    t = torch.tensor([[2.0, -1.0, 0.5]])
    at_teacher = soft_cross_entropy(t, t)
    assert at_teacher < soft_cross_entropy(torch.zeros_like(t), t)
    assert at_teacher < soft_cross_entropy(t.flip(-1), t)


def _mean(losses, first=True, k=4):
    part = losses[:k] if first else losses[-k:]
    return sum(part) / len(part)


@pytest.fixture(scope="module")
def done_project(tmp_path_factory, tiny_model_dir, tiny_task_files):
    root = tmp_path_factory.mktemp("proj") / "tiny"
    project = new_project(root, tiny_project_config(tiny_model_dir, *tiny_task_files))
    log = EventLog()
    out = run_pipeline(project, log)
    assert out == RunResult(STAGES)
    return project, log


@pytest.mark.slow
def test_full_pipeline_produces_every_artefact(done_project):
    project, log = done_project
    for stage in ("finetune", "rewire", "width", "depth", "finetune-subnets", "int8-aware", "evaluate"):
        assert project.is_done(stage), stage
    for name in ("teacher", "rewired", "width", "depth"):
        assert (project.model_dir(name) / "model.safetensors").is_file()
    assert not any(project.root.rglob("*.pt")) and not any(project.root.rglob("*.bin"))
    res = project.load_results()
    assert len(res["rows"]) == 12
    assert {(r["width_mult"], r["depth_mult"]) for r in res["rows"]} == {
        (w, d) for w in (1.0, 0.75, 0.5, 0.25) for d in (1.0, 0.75, 0.5)
    }
    assert all(0.0 <= r["value"] <= 1.0 for r in res["rows"])
    full = next(r for r in res["rows"] if r["label"] == "w1_d1")
    small = next(r for r in res["rows"] if r["label"] == "w0.25_d0.5")
    assert full["flops_rel"] == 1.0 and small["flops_rel"] < 0.2 and small["total_params"] < full["total_params"]
    # the teacher learned the task (a word-presence task: far above the 50% chance level)
    teacher = project.stage_info("finetune")["metrics"]
    assert teacher["score"] > 0.8
    assert project.load_results()["teacher"] == teacher  # what the evaluate job reports as the teacher's score
    assert len(log.of(ImportanceReady)) == 1
    imp = project.load_importance()
    assert imp["head"].shape == (4, 4) and torch.all(imp["head_rewired"][:, :-1] >= imp["head_rewired"][:, 1:])
    metrics = project.read_metrics()
    assert any(m["kind"] == "eval" for m in metrics) and any(m["kind"] == "step" for m in metrics)
    # every step reports one loss per sub-network of its stage
    width_steps = [e for e in log.of(StepEnded) if e.stage == "width"]
    depth_steps = [e for e in log.of(StepEnded) if e.stage == "depth"]
    assert set(width_steps[0].losses) == {"w1_d1", "w0.75_d1", "w0.5_d1", "w0.25_d1"}
    assert len(depth_steps[0].losses) == 12


def test_step_losses_have_one_source_the_events(done_project):
    """metrics.jsonl, the training's history the Train page redraws a reopened project from, is derived from the
    StepEnded and EvalEnded events (one writer): it holds exactly what the events said, in order."""
    project, log = done_project
    history = project.read_metrics()
    steps = [(r["stage"], r["step"], r["epoch"], r["lr"], r["losses"]) for r in history if r["kind"] == "step"]
    assert steps == [(e.stage, e.step, e.epoch, e.lr, e.losses) for e in log.of(StepEnded)]
    evals = [(r["stage"], r["step"], r["metric"], r["results"], r["chance"]) for r in history if r["kind"] == "eval"]
    # the evaluate stage's scores go to results.json, not to the training history
    assert evals == [
        (e.stage, e.step, e.metric_name, e.results, e.chance) for e in log.of(EvalEnded) if e.stage != "evaluate"
    ]
    epoch_of = {(r["stage"], r["step"]): r["epoch"] for r in history if r["kind"] == "step"}
    assert evals and all(r["epoch"] == epoch_of[r["stage"], r["step"]] for r in history if r["kind"] == "eval")


def test_every_stage_reports_its_start_progress_and_end(done_project):
    """Front ends draw one progress bar per stage: each stage starts, (rewire, evaluate) progresses, and ends, in order."""
    _, log = done_project
    bounds = [(type(e).__name__, e.stage) for e in log.events if isinstance(e, (StageStarted, StageEnded))]
    assert bounds == [(kind, stage) for stage in STAGES for kind in ("StageStarted", "StageEnded")]
    for stage in ("rewire", "evaluate"):
        start = next(i for i, e in enumerate(log.events) if isinstance(e, StageStarted) and e.stage == stage)
        end = next(i for i, e in enumerate(log.events) if isinstance(e, StageEnded) and e.stage == stage)
        total = log.events[start].total_steps
        progress = [e for e in log.events[start:end] if isinstance(e, StageProgress)]
        assert total > 0 and progress, stage
        assert [(e.stage, e.done, e.total) for e in progress] == [(stage, i, total) for i in range(1, total + 1)]
        assert not [
            e for e in log.events[:start] + log.events[end:] if isinstance(e, StageProgress) and e.stage == stage
        ]
    assert next(e for e in log.of(StageStarted) if e.stage == "evaluate").total_steps == 12  # one unit per sub-network


def test_the_evaluate_stage_reuses_the_last_scores_of_the_same_model_only(done_project):
    """The depth stage's last evaluation scores the model the evaluate stage loads: evaluate takes those scores
    (cache/dev_scores.json) instead of computing them again, and only when every weight, the dev rows and the
    depth rule are the same."""
    from dynastudio.core.evaluate import evaluate_specs, kept_scores, scores_key
    from dynastudio.core.store import final_model_name

    project, _ = done_project
    inputs = prepare_inputs(project)
    model = project.load_model(final_model_name(project), inputs.device)
    specs = subnet_grid(inputs.cfg.train.width_mults, inputs.cfg.train.depth_mults)
    labels = [s.label for s in specs]
    kept = kept_scores(inputs, model, labels)
    assert sorted(kept) == sorted(labels)  # what the evaluate stage found
    fresh = evaluate_specs(inputs, model, specs)
    assert kept == fresh
    assert {r["label"]: r["metrics"] for r in project.load_results()["rows"]} == fresh
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3  # one weight changed: nothing is reused
    assert kept_scores(inputs, model, labels) == {}
    model = project.load_model(final_model_name(project), inputs.device)
    assert scores_key(inputs, model, "paper") != scores_key(inputs, model, "keep-last")  # the rule is in the key


def _own_task_files(tiny_task_files, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in tiny_task_files:
        out.append(folder / f.name)
        out[-1].write_bytes(f.read_bytes())
    return out[0], out[1]


def _tokenizing(log: EventLog) -> list[str]:
    return [e.text for e in log.of(LogMessage) if "tokenizing" in e.text]


def _same(x, y) -> bool:
    """Two batch entries alike: tensors equal in value and dtype; the batch's flags (padded, n_tokens) equal."""
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and torch.equal(x, y) and x.dtype == y.dtype
    return x == y


def test_encoded_inputs_are_cached_at_creation_and_match_tokenizing_again(tiny_model_dir, tiny_task_files, tmp_path):
    train, dev = _own_task_files(tiny_task_files, tmp_path / "data")
    cfg = tiny_project_config(tiny_model_dir, train, dev, teacher_epochs=1)
    project = new_project(tmp_path / "p", cfg)
    assert project.inputs_cache_path == project.root / "cache" / "inputs.safetensors"
    assert project.inputs_cache_path.is_file()

    log = EventLog()
    inputs = prepare_inputs(Project.open(project.root), log)
    assert _tokenizing(log) == []  # read from the cache
    tokenizer = load_tokenizer(str(project.tokenizer_dir))
    task = load_task_data(cfg.data)
    tables = split_rows(task, cfg.train)
    assert inputs.task == TaskInfo.of(task) and inputs.pad_id == tokenizer.pad_token_id
    assert len(inputs.train) + len(inputs.heldout) == 192 and len(inputs.dev) == 64 and len(inputs.heldout) > 0
    for split in ("train", "heldout", "dev"):
        ref = encode(tables[split], tokenizer, cfg.train.max_seq_length)
        got = getattr(inputs, split)
        assert [[int(i) for i in row] for row in got.input_ids] == [[int(i) for i in row] for row in ref.input_ids], (
            split
        )
        assert ref.token_type_ids is not None
        assert [[int(i) for i in row] for row in got.token_type_ids] == [
            [int(i) for i in row] for row in ref.token_type_ids
        ], split
        assert list(got.labels) == list(ref.labels) and got.is_regression is False, split
        # and they batch the same way the training loop sees them
        for a, b in zip(
            iterate_batches(got, 16, shuffle=True, seed=3, pad_id=inputs.pad_id),
            iterate_batches(ref, 16, shuffle=True, seed=3, pad_id=inputs.pad_id),
        ):
            assert a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)

    # the stages never read the task files again: with them gone, training still runs from the cache
    train.rename(train.with_suffix(".gone"))
    dev.rename(dev.with_suffix(".gone"))
    log = EventLog()
    out = run_pipeline(Project.open(project.root), log, until="rewire")
    assert out.ran == ("finetune", "rewire") and _tokenizing(log) == []


def test_settings_that_change_the_encoded_rows_rebuild_the_cache(tiny_model_dir, tiny_task_files, tmp_path):
    from safetensors import safe_open

    def cache_meta(project):
        with safe_open(str(project.inputs_cache_path), framework="pt") as f:
            return f.metadata()

    train, dev = _own_task_files(tiny_task_files, tmp_path / "data")
    root = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, train, dev)).root
    first = Project.open(root)
    before = prepare_inputs(first)
    key_before = cache_meta(first)["key"]
    assert key_before == cache_key(first) and max(len(r) for r in before.train.input_ids) > 8

    # a shorter max_seq_length: the cached rows are stale, so they are tokenized again and the cache rewritten
    first.save_config(first.config.with_train(max_seq_length=8))
    log = EventLog()
    short = prepare_inputs(Project.open(root), log)
    assert len(_tokenizing(log)) == 1
    assert max(len(r) for r in short.train.input_ids) == 8 and max(len(r) for r in short.dev.input_ids) == 8
    assert len(short.train) == len(before.train) and list(short.dev.labels) == list(before.dev.labels)
    assert cache_meta(first)["key"] == cache_key(Project.open(root)) != key_before
    log = EventLog()
    again = prepare_inputs(Project.open(root), log)  # the rebuilt cache is used as it is
    assert _tokenizing(log) == [] and [list(r) for r in again.train.input_ids] == [
        list(r) for r in short.train.input_ids
    ]

    # how many rows go to importance scoring moves rows between train and heldout: rebuilt too
    p = Project.open(root)
    p.save_config(p.config.with_train(importance_examples=8))
    log = EventLog()
    fewer = prepare_inputs(Project.open(root), log)
    assert len(_tokenizing(log)) == 1 and len(fewer.heldout) == 8 and len(fewer.train) == 192 - 8

    # a rebuild needs the task files: without them it is a clear error, not a silent reuse of stale rows
    train.rename(train.with_suffix(".gone"))
    p = Project.open(root)
    p.save_config(p.config.with_train(max_seq_length=16))
    with pytest.raises(DataError, match=train.name):
        prepare_inputs(Project.open(root))


@pytest.mark.slow
def test_both_stages_lower_their_loss(tiny_model_dir, tiny_task_files, tmp_path):
    """Distil a fine-tuned teacher for a few epochs: the per-sub-network losses fall in both stages."""
    project = new_project(
        tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, width_epochs=4, depth_epochs=4)
    )
    run_pipeline(project, until="rewire")
    inputs = prepare_inputs(project)
    for stage, teacher_name, specs, l2 in (
        ("width", "rewired", [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)], 0.1),
        ("depth", "rewired", subnet_grid((1.0, 0.5, 0.25), (1.0, 0.5)), 1.0),
    ):
        teacher = project.load_model(teacher_name)
        student = project.load_model(teacher_name)
        # start the student away from the teacher so there is something to distil
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.05 * torch.randn_like(p))
        log = EventLog()
        step = lambda m, b, ctx, teacher=teacher, specs=specs, l2=l2: distill_step(
            m, teacher, b, specs, l1=1.0, l2=l2, depth_rule="keep-last", is_regression=False, ctx=ctx
        )
        train_loop(
            student,
            inputs.train,
            step,
            LoopSettings(stage, 4, 5e-4, 16, 0),
            events=log,
            stop=StopToken(),
            device="cpu",
            pad_id=0,
        )
        for label in log.of(StepEnded)[0].losses:
            series = [e.losses[label] for e in log.of(StepEnded)]
            assert _mean(series, first=False) < 0.85 * _mean(series, first=True), (
                stage,
                label,
                series[:4],
                series[-4:],
            )


@pytest.mark.slow
def test_cancel_then_resume_matches_an_uninterrupted_run(tiny_model_dir, tiny_task_files, tmp_path):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, checkpoint_every=100)
    ref = new_project(tmp_path / "ref", cfg)
    run_pipeline(ref, until="width")

    project = new_project(tmp_path / "cut", cfg)
    stop, seen, sink = stopping_at("width", 5)
    with pytest.raises(Cancelled):
        run_pipeline(project, sink, stop)
    assert project.is_done("rewire") and not project.is_done("width")
    saved = seen.of(CheckpointSaved)
    assert saved and saved[-1].stage == "width" and saved[-1].step == 5
    reopened = Project.open(project.root)
    assert reopened.load_checkpoint("width").step == 5

    out = run_pipeline(reopened, EventLog(), until="width")
    assert out.ran == ("width",)
    assert not reopened.checkpoint_dir("width").exists()
    a = ref.load_model("width").state_dict()
    b = reopened.load_model("width").state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-6, worst
    # the rest of the pipeline completes from there
    run_pipeline(reopened)
    assert len(reopened.load_results()["rows"]) == 12


def test_corrupted_model_file_is_a_clear_error(done_project, tmp_path):
    import shutil

    project, _ = done_project
    copy = tmp_path / "copy"
    shutil.copytree(project.root, copy)
    (copy / "models" / "width" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ProjectError, match="model.safetensors"):
        Project.open(copy).load_model("width")


def _core_modules() -> list[str]:
    import dynastudio.core

    names = sorted(f"dynastudio.core.{m.name}" for m in pkgutil.iter_modules(dynastudio.core.__path__))
    assert len(names) > 15 and "dynastudio.core.cli" in names and "dynastudio.core.jobs" in names, names
    return names


def test_core_imports_without_qt():
    """Every engine module imports on a headless server: no Qt, no plotting, and never a bare `core`."""
    modules = _core_modules()
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'gui': sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')\n"
        "                                or m.startswith('dynastudio.studio')),\n"
        "                  'bare_core': 'core' in sys.modules,\n"
        "                  'loaded': sorted(m for m in sys.modules if m.startswith('dynastudio.core.'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["gui"] == [] and got["bare_core"] is False
    assert set(modules) <= set(got["loaded"])


def _studio_imports(path: Path) -> list[str]:
    """The imports of one engine file that reach for a front end: `dynastudio.studio...`, Qt, a relative import
    that resolves outside dynastudio.core, or a bare `core`/`studio` (never installed under those names)."""
    rel = path.relative_to(CORE)
    package = ["dynastudio", "core", *rel.parts[:-1]]  # the package the file is in, installed
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            where = f"{rel}:{node.lineno}: {'.' * node.level}{node.module or ''}"
            if node.level - 1 >= len(package):
                bad.append(f"{where}: relative import beyond the top package")
                continue
            base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
            if not (base + ".").startswith("dynastudio.core."):
                bad.append(f"{where}: relative import out of dynastudio.core ({base})")
        else:
            continue
        for t in targets:
            top = t.split(".")[0]
            if (
                t == "dynastudio.studio"
                or t.startswith("dynastudio.studio.")
                or top in ("studio", "core", "PySide6", "pyqtgraph")
            ):
                bad.append(f"{rel}:{node.lineno}: imports {t}")
    return bad


def test_engine_sources_never_import_the_studio():
    files = sorted(CORE.rglob("*.py"))
    assert CORE / "cli" / "__init__.py" in files and CORE / "jobs.py" in files
    bad = [b for f in files for b in _studio_imports(f)]
    assert bad == []


def test_the_studio_import_check_catches_offenders(tmp_path, monkeypatch):
    """The check above must be able to fail: feed it files that do reach for the studio."""
    fake = tmp_path / "core"
    (fake / "sub").mkdir(parents=True)
    monkeypatch.setattr(sys.modules[__name__], "CORE", fake)
    cases = {
        "ok.py": ("from .project import Project\nfrom ..core.events import EventLog\nimport torch\n", False),
        "abs.py": ("import dynastudio.studio.app\n", True),
        "absfrom.py": ("from dynastudio.studio import main_window\n", True),
        "from_pkg.py": ("from dynastudio import studio\n", True),
        "rel.py": ("from ..studio import app\n", True),
        "rel_out.py": ("from ... import something\n", True),
        "sub/deep.py": ("from ...studio.pages import x\n", True),
        "bare.py": ("from core.project import Project\n", True),
        "qt.py": ("def f():\n    from PySide6 import QtCore\n", True),
    }
    for name, (text, offends) in cases.items():
        (fake / name).write_text(text)
        assert bool(_studio_imports(fake / name)) is offends, (name, _studio_imports(fake / name))


def test_already_finetuned_model_skips_finetune(tiny_model_dir, tiny_task_files, tmp_path):
    from dataclasses import replace

    cfg = replace(tiny_project_config(tiny_model_dir, *tiny_task_files), model_is_finetuned=True)
    project = new_project(tmp_path / "ft", cfg)
    log = EventLog()
    run_pipeline(project, log, until="rewire")
    info = project.stage_info("finetune")
    assert info["skipped"] is True and 0.0 <= info["metrics"]["score"] <= 1.0
    assert [e.skipped for e in log.of(StageEnded)] == [True, False]
    # the teacher is the given model, unchanged
    from transformers import AutoModelForSequenceClassification

    given = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir)).state_dict()
    saved = project.load_model("teacher").state_dict()
    assert all(torch.equal(given[k], saved[k]) for k in given)


def test_glue_task_from_local_folder(tmp_path):
    from dynastudio.core.config import DataConfig, ProjectConfig, profile_config

    glue = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    if not (glue / "SST-2").is_dir():
        pytest.skip("../shared/data/glue not present")
    cfg = ProjectConfig(
        model="builtin:minilm",
        data=DataConfig(kind="glue", task="sst2", data_dir=str(glue)),
        train=profile_config("quick"),
    )
    project = new_project(tmp_path / "sst2", cfg)
    task = read_task(project.root)
    assert task.train_rows == 67349 and task.dev_rows == 872 and task.metric == "accuracy"
