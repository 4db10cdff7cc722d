"""The studio on the offscreen platform: bridge, worker, the whole point-and-click flow on a tiny model, errors, closing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from dynastudio.core.events import StageStarted, StepEnded  # noqa: E402
from helpers import register_test_job as _register_test_job  # noqa: E402
from helpers import tiny_project_config

TINY_HP = dict(
    batch_size="16",
    eval_batch_size="32",
    max_seq_length="32",
    teacher_epochs="2",
    teacher_lr="0.002",
    width_epochs="1",
    width_lr="0.0005",
    depth_epochs="1",
    depth_lr="0.0005",
    importance_examples="32",
    checkpoint_every="4",
)


def _made_project(root: Path, model_dir, files, **overrides):
    from dynastudio.core.prepare import new_project

    return new_project(root, tiny_project_config(model_dir, *files, **overrides))


def _on_next_job(state, signal: str, slot) -> None:
    """Connect `slot` to a bridge signal of the next job the studio starts (each job has its own handle)."""
    state.runner.jobStarted.connect(lambda h: getattr(h.bridge, signal).connect(slot))


def _alive(pid: int) -> bool:
    from dynastudio.core.runs import pid_alive

    return pid_alive(pid)


def _error_boxes() -> list[QMessageBox]:
    from dynastudio.studio import errors

    return [b for b in errors.open_dialogs if b.isVisible()]


def _close_error_boxes() -> None:
    for b in _error_boxes():
        b.done(0)


# ---- bridge and worker ---------------------------------------------------------------------------
def test_bridge_delivers_every_step_in_order_from_another_thread(qtbot):
    from dynastudio.studio.bridge import Bridge

    bridge = Bridge(interval_ms=50)
    got, progress, stages = [], [], []
    bridge.steps.connect(lambda batch: got.extend(e.step for e in batch))
    bridge.progress.connect(lambda e: progress.append(e.step))
    bridge.stageStarted.connect(lambda e: stages.append((e.stage, len(got))))

    def emit():
        bridge.sink(StageStarted("width", 2000))
        for i in range(1, 2001):
            bridge.sink(StepEnded("width", i, 2000, {"w1_d1": 1.0 / i}, 1e-4, 0))

    t = threading.Thread(target=emit)
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(got) == 2000, timeout=5000)
    assert got == list(range(1, 2001))  # curves lose no point and keep the order
    assert stages == [("width", 0)]  # the stage began before any of its steps reached a view
    assert progress[-1] == 2000
    assert bridge.flushes < 50  # 2001 events, a handful of repaints
    assert len(progress) == bridge.flushes


def test_runner_reports_errors_and_replaces_a_job_only_when_asked_to(qtbot, monkeypatch, tmp_path):
    from dynastudio.studio.worker import JobBusy, JobRunner

    _register_test_job(monkeypatch, "boom", "boom")
    _register_test_job(monkeypatch, "slow", "slow", trains=True)
    _register_test_job(monkeypatch, "quick", "quick")
    runner = JobRunner()
    h = runner.start("boom", tmp_path)
    with qtbot.waitSignal(h.failed, timeout=10000) as err:
        pass
    info = err.args[0]
    assert not info.user and "ZeroDivisionError" in info.detail and h.status == "failed"

    order = []
    slow_h = runner.start("slow", tmp_path)
    slow_h.cancelled.connect(lambda: order.append("cancelled slow"))
    with pytest.raises(JobBusy):  # never silently: the caller must have asked the user
        runner.start("quick", tmp_path)
    assert slow_h.is_running()
    quick_h = runner.start("quick", tmp_path, replace=True)
    quick_h.finished.connect(lambda r: order.append(("finished quick", r)))
    qtbot.waitUntil(lambda: len(order) == 2, timeout=10000)
    assert order == ["cancelled slow", ("finished quick", 42)]
    from dynastudio.studio.worker import running_job_processes

    qtbot.waitUntil(lambda: not running_job_processes(), timeout=10000)  # every child process has exited
    assert not runner.is_running()


def test_a_data_file_is_summarized_by_a_short_job_beside_a_training(qtbot, monkeypatch, tmp_path):
    """The new-project form's file summary is the registered job `table-summary`: run in a child process beside the
    runner's one job (a training goes on), its result as table_summary gives it in-process (JSON has string keys)."""
    from dynastudio.core import jobs
    from dynastudio.core.data.readers import table_summary
    from dynastudio.core.errors import InternalError
    from dynastudio.core.requests import TableSummaryRequest
    from dynastudio.studio.worker import JobRunner, running_job_processes, start_side_job

    data = tmp_path / "qa.tsv"
    data.write_text(
        "sentence\tlabel\n" + "".join(f"row {i} is {'good' if i % 3 else 'bad'}\t{i % 3 != 0:d}\n" for i in range(30)),
        encoding="utf-8",
    )
    request = TableSummaryRequest(str(data), ("sentence",), "label", None, None, 4)
    in_process = table_summary(data, ("sentence",), "label", None, None, 4)
    assert in_process["counts"] == {0: 10, 1: 20}
    assert json.loads(json.dumps(jobs.run("table-summary", tmp_path, request)))["counts"] == [[0, 10], [1, 20]]

    _register_test_job(monkeypatch, "slow", "slow", trains=True)
    runner = JobRunner()
    training = runner.start("slow", tmp_path)
    with pytest.raises(InternalError):  # a job that writes the project goes through the runner
        start_side_job("slow", tmp_path, None, parent=runner)
    side = start_side_job("table-summary", tmp_path, request, parent=runner)
    with qtbot.waitSignal(side.finished, timeout=30000) as done:
        pass
    assert done.args[0] == in_process and training.is_running() and runner.current is training
    with qtbot.waitSignal(training.cancelled, timeout=10000):
        training.stop()
    qtbot.waitUntil(lambda: not running_job_processes(), timeout=10000)


def test_starting_a_job_during_training_asks_first(window, qtbot, monkeypatch, tmp_path):
    """A menu action that starts a job (the demo project here) must not stop a running training silently."""
    _register_test_job(monkeypatch, "slow", "slow", trains=True)
    state = window.state
    training = state.runner.start("slow", tmp_path)
    asked = []
    state.confirm_replace = lambda parent, running, title: asked.append((running.name, title)) or False
    window.pages["project"].open_or_create_demo(tmp_path / "demo")
    assert asked == [("slow", "Create the project")]
    assert training.is_running() and state.runner.current is training  # "No" keeps the training
    assert not (tmp_path / "demo" / "project.json").exists()
    with qtbot.waitSignal(training.cancelled, timeout=10000):
        training.stop()


# ---- the whole flow ------------------------------------------------------------------------------
@pytest.mark.slow
def test_whole_flow_create_train_explore_export(window, qtbot, tiny_model_dir, tiny_task_files, tmp_path):
    w, state = window, window.state
    train_file, dev_file = tiny_task_files
    assert w.blocked["train"].reason.text().startswith("No project is open")

    # Project: fill the form like a user, validated inline before anything runs
    page = w.pages["project"]
    page.tabs.setCurrentIndex(1)
    pp = page.form
    pp.folder.setText(str(tmp_path / "proj"))
    pp.model_local.setChecked(True)
    pp.model_dir.setText(str(tiny_model_dir))
    pp.task_files.setChecked(True)
    pp.train_file.setText(str(train_file))
    pp.dev_file.setText(str(dev_file))
    assert pp.text_a.currentText() == "sentence" and pp.label_col.currentText() == "label"
    for name, value in TINY_HP.items():
        pp.hp.editors[name].setText(value)
    pp.hp.editors["width_mults"].setText("1,0.5")
    pp.hp.editors["depth_mults"].setText("1,0.5")
    assert pp.validate() == []
    assert pp.preview.rowCount() > 0 and "label counts" in pp.label_counts.text()
    with qtbot.waitSignal(page.projectOpened, timeout=60000):
        qtbot.mouseClick(pp.create_button, Qt.MouseButton.LeftButton)
    assert state.project is not None and w.current_step() == "train"
    assert w.blocked_reason_shown("explore")

    # Train: every stage, curves fed live
    tp = w.pages["train"]
    steps_seen = []
    _on_next_job(state, "steps", lambda batch: steps_seen.extend(batch))
    with qtbot.waitSignal(state.runner.jobEnded, timeout=180000) as ended:
        qtbot.mouseClick(tp.start_button, Qt.MouseButton.LeftButton)
    assert ended.args[0].status == "done" and state.all_done()
    depth_steps = [e for e in steps_seen if e.stage == "depth"]
    assert depth_steps and tp.shown_stage == "depth"
    assert tp.loss_plot.shown == ["w1_d1", "w0.5_d1", "w1_d0.5", "w0.5_d0.5"]
    assert tp.loss_plot.point_count() == 4 * len(depth_steps)  # one point per step per sub-network, none lost
    assert tp.eval_plot.point_count() > 0
    # every stage full, but the skipped ones (subnet_epochs and int8_epochs 0), which show an empty, greyed bar
    skipped = ("finetune-subnets", "int8-aware")
    assert all(r.bar.value() == r.bar.maximum() for s, r in tp.rows.items() if s not in skipped)
    assert all(tp.rows[s].status.text().startswith("skipped (") for s in skipped)
    assert w.current_step() == "explore"  # a finished training moves on to the results

    # Importance: heatmaps hold data, hover reads a value
    ip = w.pages["importance"]
    w.go_to("importance")
    assert w.slots["importance"].currentIndex() == 0
    assert ip.has_data() and ip.heads.shown.shape == (4, 4)
    assert ip.neurons.shown.shape[0] == 4 and np.isfinite(ip.neurons.shown).all()
    centre = ip.heads.plot.vb.mapViewToScene(QPointF(1.5, 2.5))
    ip._on_mouse_moved(centre)
    assert ip.hover.text().startswith("layer 2, head 1: importance")
    ip.before.setChecked(True)
    assert ip.heads.shown.shape == (4, 4) and not ip.heads.cuts

    # Explore: one point per sub-network; clicking a point selects it, the table follows
    ep = w.pages["explore"]
    w.go_to("explore")
    qtbot.waitUntil(lambda: ep.plot.isVisible(), timeout=2000)
    qtbot.wait(200)  # let the freshly shown chart lay out before mapping points to pixels
    rows = state.results()["rows"]
    assert len(ep.plot.scatter.points()) == len(rows) == 4
    pts = {l: ep.point_for(l) for l in ep.labels}
    # a point no other point sits on (w1_d0.5 and w0.5_d1 share their FLOPs, and may share the metric)
    target = next(l for l in ("w0.5_d0.5", "w1_d1", "w0.5_d1") if list(pts.values()).count(pts[l]) == 1)
    x, y = pts[target]
    view_pos = ep.plot.mapFromScene(ep.plot.getViewBox().mapViewToScene(QPointF(x, y)))
    qtbot.mouseClick(ep.plot.viewport(), Qt.MouseButton.LeftButton, pos=view_pos)
    qtbot.waitUntil(lambda: state.selected == target, timeout=3000)
    selected_rows = {i.row() for i in ep.table.selectedItems()}
    assert len(selected_rows) == 1 and ep.table.item(selected_rows.pop(), 0).text() == target
    assert list(ep.plot.selected_ring.getData()[0]) == [x]
    # ... and selecting a table row selects on the chart
    other = next(l for l in ep.labels if l != target)
    ep.table.selectRow(ep.table.row_of(other))
    assert state.selected == other
    assert ep.plot.selected_ring.getData()[0][0] == ep.point_for(other)[0]
    # the budget picks the best sub-network under it
    ep.set_budget(float(min(ep.xs)))
    assert ep.best is not None and ep.xs[ep.best] == min(ep.xs)
    assert "best is" in ep.budget_text.text()
    tip = ep._tip(0, 0, target)
    assert target in tip and "parameters" in tip and "latency" in tip

    # Export: the selection, a preset, one click, an ONNX file that verified
    xp = w.pages["export"]
    state.select(target)
    w.go_to("export")
    assert xp.subnet.currentData() == target
    xp.target.setCurrentIndex(xp.target.findData("onnx"))  # a plain format, after the presets
    out = tmp_path / "exported"
    xp.out.setText(str(out))
    xp._out_edited = True
    with qtbot.waitSignal(state.runner.jobEnded, timeout=180000) as ended:
        qtbot.mouseClick(xp.export_button, Qt.MouseButton.LeftButton)
    assert ended.args[0].status == "done" and ended.args[0].name == "export"
    assert (out / "model.onnx").is_file()
    assert "verified" in xp.verify.text() and xp.files.rowCount() >= 3
    assert xp.open_folder.isEnabled()
    assert not _error_boxes()


# ---- closing, errors, latency wiring --------------------------------------------------------------
@pytest.mark.slow
def test_closing_mid_training_asks_stops_and_stays_resumable(window, qtbot, tiny_model_dir, tiny_task_files, tmp_path):
    from dynastudio.core.project import Project

    w, state = window, window.state
    project = _made_project(tmp_path / "p", tiny_model_dir, tiny_task_files, teacher_epochs=400)
    w.pages["project"].open_folder(project.root)
    asked = []
    w.confirm_close = lambda handle: asked.append(handle.name) or "stop"
    progressed = []
    _on_next_job(state, "progress", progressed.append)
    w.pages["train"].start()
    qtbot.waitUntil(lambda: bool(progressed), timeout=60000)
    handle = state.runner.current
    pid = handle.run.pid
    assert w.isVisible()  # the GUI thread is free while the child process trains
    w.close()
    assert asked == ["run"]
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=60000)
    assert not state.runner.is_running() and handle.status == "stopped"
    qtbot.waitUntil(lambda: not _alive(pid), timeout=10000)
    status = state.stage_status("finetune")
    assert status.startswith("paused at step"), status
    reopened = Project.open(project.root)
    assert reopened.load_checkpoint("finetune").step > 0 and not reopened.is_done("finetune")


@pytest.mark.slow
def test_closing_asks_and_no_keeps_training(window, qtbot, tiny_model_dir, tiny_task_files, tmp_path):
    w, state = window, window.state
    project = _made_project(tmp_path / "p", tiny_model_dir, tiny_task_files, teacher_epochs=400)
    state.open_project(project.root)
    w.confirm_close = lambda handle: "cancel"
    progressed = []
    _on_next_job(state, "progress", progressed.append)
    w.pages["train"].start()
    qtbot.waitUntil(lambda: bool(progressed), timeout=60000)
    w.close()
    assert w.isVisible() and state.runner.is_running()
    with qtbot.waitSignal(state.runner.current.cancelled, timeout=60000):
        w.pages["train"].stop()


def test_user_mistakes_are_messages_not_crashes(window, qtbot, tmp_path, tiny_task_files):
    w = window
    page = w.pages["project"]
    pp = page.form
    # opening a folder that is not a project: a dialog with the one-line message, no details
    assert not page.open_folder(tmp_path)
    boxes = _error_boxes()
    assert len(boxes) == 1 and "not a DynaBERT Studio project" in boxes[0].text() and not boxes[0].detailedText()
    _close_error_boxes()

    # a data file without the label column, an unsupported model: inline, before anything runs
    bad = tmp_path / "bad.csv"
    bad.write_text("text,stars\nnice film,5\n", encoding="utf-8")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    pp.folder.setText(str(tmp_path / "new"))
    pp.model_local.setChecked(True)
    pp.model_dir.setText(str(gpt))
    pp.task_files.setChecked(True)
    pp.train_file.setText(str(bad))
    pp.dev_file.setText(str(tiny_task_files[1]))
    pp.label_col.setCurrentText("stars")
    pp.hp.editors["teacher_lr"].setText("fast")
    errors = pp.validate()
    assert len(errors) == 3
    assert "not supported" in pp.model_error.text() and pp.model_error.isVisibleTo(pp)
    assert "teacher_lr" in pp.train_error.text()
    assert pp.task_error.text() and not pp.create_button.isEnabled()
    assert not (tmp_path / "new").exists()

    # a bug inside a job: a dialog whose details hold the traceback
    from dynastudio.studio.errors import ErrorInfo, show_error

    try:
        raise RuntimeError("kaboom")
    except RuntimeError as exc:
        box = show_error(w, ErrorInfo.from_exception(exc))
    assert "kaboom" in box.text() and "Traceback" in box.detailedText()
    _close_error_boxes()

    # a full disk is the user's to fix: the message says so
    import errno

    info = ErrorInfo.from_exception(OSError(errno.ENOSPC, "No space left on device", "/x/model.onnx"))
    assert info.user and "disk is full" in info.message


def test_measure_latency_switches_the_axis(window, qtbot, tiny_model_dir, tiny_task_files, tmp_path, monkeypatch):
    from dynastudio.core import jobs

    w, state = window, window.state
    project = _made_project(
        tmp_path / "p", tiny_model_dir, tiny_task_files, teacher_epochs=1, width_mults=(1.0, 0.5), depth_mults=(1.0,)
    )
    jobs.run("run", project)
    _register_test_job(monkeypatch, "latency", "fake_latency_file", request_type="LatencyRequest")
    w.pages["project"].open_folder(project.root)
    ep = w.pages["explore"]
    assert ep.x_key == "flops_rel" and "not measured" in ep.plot.getAxis("bottom").labelText
    ep.threads.setValue(1)
    with qtbot.waitSignal(state.runner.jobEnded, timeout=30000):
        qtbot.mouseClick(ep.measure, Qt.MouseButton.LeftButton)
    # the request the page built reached the child: the project's own length by default
    assert project.load_latency()["setup"]["seq"] == project.config.train.max_seq_length
    assert ep.x_key == "latency_fp32_ms" and "test CPU" in ep.device.text()
    assert ep.xs.max() == 10.0 and len(ep.xs) == 2


def test_each_page_builds_on_its_own(qtbot, tiny_model_dir, tiny_task_files, tmp_path):
    from dynastudio.studio.pages.explore import ExplorePage
    from dynastudio.studio.pages.export import ExportPage
    from dynastudio.studio.pages.importance import ImportancePage
    from dynastudio.studio.pages.new_project import NewProjectForm
    from dynastudio.studio.pages.project import ProjectPage
    from dynastudio.studio.pages.train import TrainPage
    from dynastudio.studio.state import StudioState

    project = _made_project(tmp_path / "p", tiny_model_dir, tiny_task_files)
    for cls in (ProjectPage, NewProjectForm, ImportancePage, TrainPage, ExplorePage, ExportPage):
        state = StudioState()
        page = cls(state)
        qtbot.addWidget(page)
        state.open_project(project.root)
        page.show()
        assert page.isVisible()


def test_recent_projects_are_remembered(qtbot, tiny_model_dir, tiny_task_files, tmp_path):
    from dynastudio.studio.state import RecentProjects, StudioState

    project = _made_project(tmp_path / "p", tiny_model_dir, tiny_task_files)
    StudioState().open_project(project.root)
    assert RecentProjects().load() == [str(project.root.resolve())]


def test_gui_command_opens_the_project_it_is_given(tiny_model_dir, tiny_task_files, tmp_path):
    """The real command in its own process (the app's start-up changes process-wide state: the garbage
    collector, sys.excepthook, the Qt application's quit), opening the project it is given."""
    import os
    import subprocess
    import sys

    project = _made_project(tmp_path / "opened", tiny_model_dir, tiny_task_files)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, "-m", "dynastudio.core.cli", "gui", str(project.root), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"(project {project.root}, page train)" in proc.stdout
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("page", ["project", "new_project", "importance", "train", "explore", "export"])
def test_page_preview_smoke_runs_offscreen(page, tiny_model_dir, tiny_task_files, tmp_path):
    """`python -m dynastudio.studio.pages.X PROJECT` opens the page on its own and exits cleanly."""
    import os
    import subprocess
    import sys

    project = _made_project(tmp_path / "p", tiny_model_dir, tiny_task_files)
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "DYNASTUDIO_PREVIEW_QUIT_MS": "1500",
        "DYNASTUDIO_CONFIG_DIR": str(tmp_path / "config"),
    }
    out = subprocess.run(
        [sys.executable, "-m", f"dynastudio.studio.pages.{page}", str(project.root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_explore_imports_device_latency_and_switches_device(window, qtbot, tiny_model_dir, tiny_task_files, tmp_path):
    """A device kit's result file, imported on Explore: a device picker appears and the chart uses that device's
    latency (the budget and the Pareto front with it); a broken file is a message, not a crash."""
    import json

    from dynastudio.core import jobs

    w = window
    project = _made_project(
        tmp_path / "p", tiny_model_dir, tiny_task_files, teacher_epochs=1, width_mults=(1.0, 0.5), depth_mults=(1.0,)
    )
    jobs.run("run", project)
    rows = [
        {
            "label": r["label"],
            "width_mult": r["width_mult"],
            "depth_mult": r["depth_mult"],
            "values": {"latency_fp32_ms": 7.0 * r["width_mult"], "latency_fp32_p90_ms": 8.0, "size_onnx_fp32_mb": 1.0},
        }
        for r in project.load_results()["rows"]
    ]
    result = tmp_path / "latency-pi.json"
    result.write_text(
        json.dumps(
            {
                "kind": "dynastudio-device-latency",
                "version": 1,
                "setup": {"device": "pi", "runtime": "onnxruntime 1.0", "threads": 1, "batch": 1, "seq": 32},
                "rows": rows,
            }
        )
    )
    w.pages["project"].open_folder(project.root)
    w.go_to("explore")
    ep = w.pages["explore"]
    assert ep.x_key == "flops_rel" and not ep.device_pick.isVisible()  # nothing measured anywhere yet
    ep.pick_file = lambda: str(result)
    qtbot.mouseClick(ep.import_button, Qt.MouseButton.LeftButton)
    assert ep.device_pick.isVisible() and ep.selected_device() == "pi"
    assert ep.x_key == "latency_fp32_ms" and sorted(ep.xs.tolist()) == [3.5, 7.0]
    assert "Measured on pi" in ep.device.text()
    ep.device_pick.setCurrentIndex(ep.device_pick.findData(None))
    ep.device_pick.activated.emit(ep.device_pick.currentIndex())
    assert ep.selected_device() is None and ep.x_key == "flops_rel"  # this machine has measured nothing

    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    ep.pick_file = lambda: str(bad)
    qtbot.mouseClick(ep.import_button, Qt.MouseButton.LeftButton)
    boxes = _error_boxes()
    assert len(boxes) == 1 and str(bad) in boxes[0].text() and "'kind'" in boxes[0].text()
    _close_error_boxes()
    assert ep.device_pick.count() == 2  # this machine + pi: nothing half-imported
