"""train.report_to: a run's losses, lr, dev metrics, final grid and settings in TensorBoard and MLflow, read back with
each tool's own reader; the setting's default and migration; a missing package refused before anything trains."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dynastudio.core import jobs
from dynastudio.core.config import SCHEMA_VERSION, ProjectConfig, migrate, report_targets
from dynastudio.core.errors import ConfigError
from dynastudio.core.events import EvalEnded, EventLog, LogMessage, StepEnded, StopToken
from dynastudio.core.prepare import new_project
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from dynastudio.core.tracking import MLRUNS_DIR, TENSORBOARD_DIR
from helpers import tiny_project_config

# small enough for a few seconds a stage: the teacher still learns the word-presence task
SHORT = dict(teacher_epochs=2, width_epochs=1, depth_epochs=1, checkpoint_every=4)


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _block(monkeypatch, *modules: str) -> None:
    """Make `import <module>` fail here as it does where the package is not installed."""
    for m in modules:
        for name in [n for n in sys.modules if n == m or n.startswith(m + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, m, None)


@pytest.fixture
def mlflow_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the tracker sets for its file store, undone here
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


# ---- the setting ------------------------------------------------------------------------------------------
def test_report_to_is_none_by_default_and_old_projects_open_without_it(tiny_model_dir, tiny_task_files):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files)
    assert cfg.train.report_to == "none" and report_targets(cfg.train.report_to) == ()
    for version in (1, 2):  # project.json files written before the setting existed
        old = json.loads(cfg.to_json())
        old["schema_version"] = version
        del old["train"]["report_to"]
        loaded = ProjectConfig.from_json(json.dumps(old))
        assert loaded.train.report_to == "none" and loaded.schema_version == SCHEMA_VERSION
    assert migrate({"schema_version": 2, "train": {}})["schema_version"] == SCHEMA_VERSION
    # the file a newer release writes is refused by name by one that predates it, instead of "unknown field"
    newer = {**json.loads(cfg.to_json()), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(ConfigError, match="upgrade dynabert-studio"):
        ProjectConfig.from_json(json.dumps(newer))


def test_report_to_takes_several_trackers_and_refuses_unknown_ones(tiny_model_dir, tiny_task_files):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files)
    assert cfg.with_train(report_to=" MLflow, tensorboard").train.report_to == "tensorboard,mlflow"
    assert cfg.with_train(report_to="").train.report_to == "none"
    assert report_targets("tensorboard,mlflow,tensorboard") == ("tensorboard", "mlflow")
    for bad, needle in (("wandb", "unknown tracker 'wandb'"), ("none,mlflow", "'none' goes alone"), (3, "string")):
        with pytest.raises(ConfigError, match=needle):
            cfg.with_train(report_to=bad)
    raw = json.loads(cfg.to_json())
    raw["train"]["report_to"] = "tensorbord"
    with pytest.raises(ConfigError, match="project.json: train.report_to: unknown tracker 'tensorbord'"):
        ProjectConfig.from_json(json.dumps(raw))


# ---- a missing package: one line, before anything trains --------------------------------------------------
@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_a_missing_tracker_package_is_refused_before_the_run_trains(
    tracker, tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, report_to=tracker))
    _block(monkeypatch, tracker)
    log = EventLog()
    with pytest.raises(ConfigError) as err:
        jobs.run("run", project, RunRequest(), log)
    assert f"pip install 'dynabert-studio[{tracker}]'" in str(err.value) and "\n" not in str(err.value)
    assert not log.of(StepEnded) and not project.is_done("finetune") and not project.metrics_path.exists()
    # a stage run on its own is refused alike
    with pytest.raises(ConfigError, match=rf"dynabert-studio\[{tracker}\]"):
        jobs.run("finetune", project, None, EventLog())
    assert not project.checkpoint_dir("finetune").exists()


def test_the_cli_refuses_a_missing_tracker_and_run_overrides_the_setting_for_one_run(
    cli, tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    train, dev = tiny_task_files
    proj = tmp_path / "p"
    files = ["--model", tiny_model_dir, "--train", train, "--dev", dev, "--text-columns", "sentence"]
    _block(monkeypatch, "mlflow")
    made = cli("new", proj, *files, "--label-column", "label", "--report-to", "tensorboard,MLflow")
    assert made.returncode == 0, made.stderr
    assert json.loads((proj / "project.json").read_text())["train"]["report_to"] == "tensorboard,mlflow"
    assert "pip install 'dynabert-studio[mlflow]'" in made.stderr  # said at creation: the run will need it
    assert_user_error(cli("run", proj), "train.report_to names mlflow", "pip install 'dynabert-studio[mlflow]'")
    assert_user_error(cli("run", proj, "--report-to", "wandb"), "unknown tracker 'wandb'")
    assert not (proj / "run").exists() and not (proj / "metrics.jsonl").exists()  # refused before the run began
    # --report-to replaces the setting for this run only: the project keeps its own
    assert_user_error(cli("run", proj, "--report-to", "mlflow"), "dynabert-studio[mlflow]")
    stop = StopToken()
    stop.set()  # the run starts, then stops at once: it got past the tracker check
    monkeypatch.setattr("dynastudio.core.cli.pipeline.stop_on_sigint", lambda also_sigterm: (stop, {}))
    assert cli("run", proj, "--report-to", "none").returncode == 130
    assert json.loads((proj / "project.json").read_text())["train"]["report_to"] == "tensorboard,mlflow"
    assert_user_error(cli("new", tmp_path / "q", *files, "--report-to", "tensorbord"), "unknown tracker 'tensorbord'")


# ---- for real: a tiny run written to both, read back by each tool --------------------------------------------
@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_dir, tiny_task_files):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, report_to="tensorboard,mlflow", **SHORT)
        project = new_project(tmp_path_factory.mktemp("tracked") / "tiny", cfg)
        log = EventLog()
        jobs.run("run", project, RunRequest(), log)
        yield project, log


def _accumulator(d: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.mark.slow
def test_tensorboard_event_files_hold_each_stage_read_back_by_tensorboard(tracked_run):
    project, log = tracked_run
    root = project.root / TENSORBOARD_DIR
    # one TensorBoard run per stage, numbered in pipeline order; the skipped finetune-subnets and int8-aware have none
    assert sorted(p.name for p in root.iterdir()) == ["1-finetune", "2-rewire", "3-width", "4-depth", "7-evaluate"]
    for stage, folder in (("finetune", "1-finetune"), ("width", "3-width"), ("depth", "4-depth")):
        acc = _accumulator(root / folder)
        steps = [e for e in log.of(StepEnded) if e.stage == stage]
        for label in steps[0].losses:
            got = _scalars(acc, f"loss/{label}")
            assert [s for s, _ in got] == [e.step for e in steps]
            assert [v for _, v in got] == pytest.approx([e.losses[label] for e in steps], rel=1e-6)
        assert [v for _, v in _scalars(acc, "lr")] == pytest.approx([e.lr for e in steps], rel=1e-6)
        evals = [e for e in log.of(EvalEnded) if e.stage == stage]
        dev = _scalars(acc, "dev/accuracy/w1_d1")
        assert len(evals) >= 1 and dev == [(e.step, pytest.approx(e.results["w1_d1"])) for e in evals]
        assert "stage/seconds" in acc.Tags()["scalars"]
    assert len(_accumulator(root / "4-depth").Tags()["scalars"]) == 12 + 1 + 12 + 2  # losses, lr, dev, chance+seconds
    assert _scalars(_accumulator(root / "1-finetune"), "teacher/constant")
    # the final grid: every sub-network's dev score, as scalars and as a table
    results = json.loads(project.results_path.read_text())
    acc = _accumulator(root / "7-evaluate")
    for row in results["rows"]:
        assert _scalars(acc, f"grid/accuracy/{row['label']}") == [(0, pytest.approx(row["value"]))]
    table = acc.Tensors("grid/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| w0.25_d0.5 |" in table and "| sub-network | width | depth | accuracy |" in table
    # the settings, as TensorBoard's hparams plugin reads them
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _accumulator(root / "3-width").PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert info.hparams["train.width_lr"].number_value == pytest.approx(project.config.train.width_lr)
    assert info.hparams["train.report_to"].string_value == "tensorboard,mlflow"
    assert info.hparams["train.width_mults"].string_value == "1,0.75,0.5,0.25"
    assert any(isinstance(e, LogMessage) and "tensorboard --logdir" in e.text for e in log.events)


@pytest.mark.slow
def test_mlflow_file_store_holds_each_stage_read_back_by_mlflows_client(tracked_run, mlflow_env):
    from mlflow.tracking import MlflowClient

    project, log = tracked_run
    client = MlflowClient(tracking_uri=(project.root / MLRUNS_DIR).as_uri())
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["depth", "evaluate", "finetune", "rewire", "width"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    width = runs["width"]
    assert width.data.tags["dynastudio.stage"] == "width"
    assert width.data.params["train.width_lr"] == str(project.config.train.width_lr)
    assert width.data.params["data.text_columns"] == "sentence"
    steps = [e for e in log.of(StepEnded) if e.stage == "width"]
    for label in steps[0].losses:
        history = sorted(client.get_metric_history(width.info.run_id, f"loss/{label}"), key=lambda m: m.step)
        assert [m.step for m in history] == [e.step for e in steps]
        assert [m.value for m in history] == pytest.approx([e.losses[label] for e in steps], rel=1e-6)
    lr = sorted(client.get_metric_history(width.info.run_id, "lr"), key=lambda m: m.step)
    assert [m.value for m in lr] == pytest.approx([e.lr for e in steps], rel=1e-6)
    evals = [e for e in log.of(EvalEnded) if e.stage == "depth"]
    dev = client.get_metric_history(runs["depth"].info.run_id, "dev/accuracy/w0.5_d0.75")
    assert [(m.step, m.value) for m in dev] == [(e.step, pytest.approx(e.results["w0.5_d0.75"])) for e in evals]
    results = json.loads(project.results_path.read_text())
    final = runs["evaluate"].data.metrics
    assert {r["label"]: r["value"] for r in results["rows"]} == pytest.approx(
        {k.split("/")[-1]: v for k, v in final.items() if k.startswith("grid/accuracy/")}
    )
    artifacts = {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
    assert {"results.json", "grid.md"} <= artifacts


class Crash(Exception):
    """A process dying mid-stage, as far as the run's files can tell."""


@pytest.mark.slow
def test_a_stopped_or_crashed_stage_continues_its_own_run_in_both_trackers(
    tiny_model_dir, tiny_task_files, tmp_path, mlflow_env
):
    """The width stage stopped at step 2 (it saves a checkpoint), resumed, crashed at step 6 (last checkpoint: 4),
    resumed again: MLflow's width run is the same run all along, FINISHED at the end; TensorBoard shows each step
    once (the crashed run's step 5 is purged, the replayed one kept)."""
    from mlflow.tracking import MlflowClient

    from dynastudio.core.errors import Cancelled

    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, report_to="tensorboard,mlflow", **SHORT)
    project = new_project(tmp_path / "p", cfg)
    client = MlflowClient(tracking_uri=(project.root / MLRUNS_DIR).as_uri())

    def width_run():
        exp = client.get_experiment_by_name("tiny").experiment_id
        [run] = [r for r in client.search_runs([exp]) if r.info.run_name == "width"]
        return run

    stop = StopToken()

    def stop_at_2(event):
        if isinstance(event, StepEnded) and event.stage == "width" and event.step == 2:
            stop.set()

    with pytest.raises(Cancelled):
        jobs.run("run", project, RunRequest(until="width"), stop_at_2, stop)
    first = width_run()
    assert first.info.status == "KILLED"

    def crash_at_6(event):
        if isinstance(event, StepEnded) and event.stage == "width" and event.step == 6:
            raise Crash("killed")

    with pytest.raises(Crash):
        jobs.run("run", Project.open(project.root), RunRequest(until="width"), crash_at_6)
    crashed = width_run()
    assert crashed.info.run_id == first.info.run_id and crashed.info.status == "FAILED"
    log = EventLog()
    jobs.run("run", Project.open(project.root), RunRequest(until="width"), log)
    width = [e for e in log.of(StepEnded) if e.stage == "width"]
    assert width[0].step == 5  # resumed from the checkpoint at step 4
    done = width_run()
    assert done.info.run_id == first.info.run_id and done.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(done.info.run_id, "loss/w1_d1")]
    assert sorted(set(steps)) == list(range(1, width[-1].step + 1))
    tb = _scalars(_accumulator(project.root / TENSORBOARD_DIR / "3-width"), "loss/w1_d1")
    assert [s for s, _ in tb] == list(range(1, width[-1].step + 1))
    assert [v for s, v in tb if s >= 5] == pytest.approx([e.losses["w1_d1"] for e in width], rel=1e-6)


@pytest.mark.slow
def test_under_torchrun_only_the_main_process_writes(tiny_model_dir, tiny_task_files, tmp_path):
    """2 processes (gloo): one event file per stage, each step once, and --report-to reaches every rank."""
    import os
    import subprocess

    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, **SHORT)
    root = tmp_path / "p"
    new_project(root, cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "dynastudio.core.cli", "run", str(root), "--until", "width", "--report-to", "tensorboard"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    stages = sorted(p.name for p in (root / TENSORBOARD_DIR).iterdir())
    assert stages == ["1-finetune", "2-rewire", "3-width"]
    for name in stages:
        assert len(list((root / TENSORBOARD_DIR / name).glob("events.out.tfevents.*"))) == 1, name
    steps = [r["step"] for r in Project.open(root).read_metrics() if r.get("kind") == "step" and r["stage"] == "width"]
    assert [s for s, _ in _scalars(_accumulator(root / TENSORBOARD_DIR / "3-width"), "loss/w1_d1")] == steps
    assert json.loads((root / "project.json").read_text())["train"]["report_to"] == "none"


@pytest.mark.slow
def test_a_tracker_that_fails_mid_run_is_dropped_with_a_warning_and_the_training_goes_on(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    from dynastudio.core import tracking

    calls = []

    def full_disk(self, stage, values, step):
        calls.append(step)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking._TensorBoard, "scalars", full_disk)
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, report_to="tensorboard", **SHORT)
    project = new_project(tmp_path / "p", cfg)
    log = EventLog()
    jobs.run("run", project, RunRequest(until="finetune"), log)
    assert project.is_done("finetune") and len(calls) == 3  # dropped at the third value, never called again
    [warning] = [e for e in log.of(LogMessage) if e.level == "warning" and "tensorboard" in e.text]
    assert "stopped logging" in warning.text and "No space left" in warning.text and "training goes on" in warning.text
