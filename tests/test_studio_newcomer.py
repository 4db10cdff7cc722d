"""What a new user meets first (issue 10): column guessing in the form, a form that holds still,
live stage state, readable charts with a chance line, latency progress and cancel, small dialogs."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint  # noqa: E402
from PySide6.QtWidgets import QApplication, QLabel  # noqa: E402


def _qa_rows(n: int = 12) -> str:
    return "".join(
        f"is row {i} wet,row {i} is {'wet' if i % 2 else 'dry'} today,{'yes' if i % 2 else 'no'}\n" for i in range(n)
    )


# ---- the New-project form ------------------------------------------------------------------------
def test_form_guesses_a_pair_and_never_gives_a_column_two_roles(window, tmp_path):
    from dynastudio.studio.pages.new_project import NONE

    window.pages["project"].tabs.setCurrentIndex(1)
    pp = window.pages["project"].form
    pp.task_files.setChecked(True)
    qa = tmp_path / "qa.csv"
    qa.write_text("question,passage,label\n" + _qa_rows(), encoding="utf-8")
    pp.train_file.setText(str(qa))
    pp.dev_file.setText(str(qa))
    assert (pp.text_a.currentText(), pp.text_b.currentText(), pp.label_col.currentText()) == (
        "question",
        "passage",
        "label",
    )
    assert "Guessed from the file: text = question + passage (a sentence pair), label = label" in pp.column_note.text()
    pp.validate()
    assert not pp.task_error.text() and pp.preview.columnCount() == 3

    # no label column: nothing lands in the label role, and the message says what to pick
    unlabelled = tmp_path / "nolabel.csv"
    unlabelled.write_text(
        "question,passage\n" + "".join(",".join(r.split(",")[:2]) + "\n" for r in _qa_rows().splitlines()),
        encoding="utf-8",
    )
    pp.train_file.setText(str(unlabelled))
    pp.dev_file.setText(str(unlabelled))
    assert pp.label_col.currentText() == NONE and pp.text_a.currentText() == "question"
    assert "No column looks like the label" in pp.column_note.text()
    pp.validate()
    assert pp.task_error.text() == "Pick the label column." and not pp.create_button.isEnabled()

    # the user picks a text column as the label: one rule, the engine's, says no
    pp.label_col.setCurrentText("passage")
    pp.validate()
    assert "'passage' is picked as both text and label" in pp.task_error.text()


def test_form_does_not_move_when_messages_appear(window, qtbot, tmp_path):
    window.pages["project"].tabs.setCurrentIndex(1)
    pp = window.pages["project"].form
    window.resize(1280, 800)
    pp.folder.setText(str(tmp_path / "fresh"))
    pp.validate()
    QApplication.processEvents()
    assert pp.errors == []
    before = pp.create_button.mapTo(window, QPoint(0, 0))

    afile = tmp_path / "afile"
    afile.write_text("x")
    pp.folder.setText(str(afile))  # a file, not a folder
    pp.model_local.setChecked(True)  # and no model folder chosen
    pp.hp.editors["teacher_lr"].setText("fast")
    pp.validate()
    QApplication.processEvents()
    assert len(pp.errors) == 3 and pp.folder_error.text() and pp.model_error.text() and pp.train_error.text()
    assert pp.create_button.mapTo(window, QPoint(0, 0)) == before


# ---- live state ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_view_shows_the_true_stage_state_while_training_and_after_stop(
    window, qtbot, tiny_model_dir, tiny_task_files, tmp_path
):
    from dynastudio.core.prepare import new_project
    from helpers import tiny_project_config

    w, state = window, window.state
    project = new_project(
        tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, width_epochs=200)
    )
    state.open_project(project.root)
    assert w.blocked_reason_shown("importance")
    seen = {}

    def on_progress(e):
        # in the middle of the width stage, with the job still running: what does each view say?
        if e.stage == "width" and e.step >= 3 and "current" not in seen:
            seen["running"] = state.runner.is_running()
            seen["current"] = w.pages["project"].current.text()
            seen["importance_blocked"] = w.blocked_reason_shown("importance")
            seen["rows"] = {s: r.status.text() for s, r in w.pages["train"].rows.items()}
            w.pages["train"].stop()

    state.runner.jobStarted.connect(lambda h: h.bridge.progress.connect(on_progress))
    w.pages["train"].start()
    with qtbot.waitSignal(state.runner.jobEnded, timeout=120000):
        pass
    assert seen["running"]
    current = seen["current"]
    assert "finetune</td><td>&nbsp;&nbsp;done in 0:" in current and "rewire</td><td>&nbsp;&nbsp;done in 0:" in current
    assert "width</td><td>&nbsp;&nbsp;running, step " in current and "depth</td><td>&nbsp;&nbsp;pending" in current
    assert not seen["importance_blocked"]  # rewire finished: Importance opens while training goes on
    assert seen["rows"]["finetune"].startswith("done in 0:")

    # after Stop: the bar shows the checkpoint's true share next to "paused at step N of M"
    step, total = state.project.checkpoint_progress("width")
    assert 3 <= step < total
    row = w.pages["train"].rows["width"]
    assert row.status.text() == f"paused at step {step} of {total}"
    assert (row.bar.value(), row.bar.maximum()) == (step, total) and row.bar.text() == f"{step} / {total} steps"
    assert w.pages["train"].rows["finetune"].status.text().startswith("done in 0:")
    assert f"paused at step {step} of {total}" in w.pages["project"].current.text()
    assert w.pages["train"].start_button.text() == "Resume training"


# ---- measuring latency ---------------------------------------------------------------------------
@pytest.mark.slow
def test_latency_shows_progress_warns_when_busy_and_cancels(
    window, qtbot, monkeypatch, tiny_model_dir, tiny_task_files, tmp_path
):
    from dynastudio.core.prepare import new_project
    from helpers import register_test_job, tiny_project_config

    # the fake job runs in the job child process, on a machine it makes look busy (load 3.5 on 2 cores)
    monkeypatch.setenv("STUDIO_TEST_LOAD", "3.5")
    register_test_job(monkeypatch, "latency", "fake_latency", request_type="LatencyRequest")
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    w, state = window, window.state
    state.open_project(project.root)
    ep = w.pages["explore"]
    assert ep.seq.value() == project.config.train.max_seq_length == 32  # the project's own length, not 128
    logs = []
    state.runner.jobStarted.connect(lambda h: h.bridge.log.connect(lambda e: logs.append(e.text)))
    ep.measure_latency()
    qtbot.waitUntil(lambda: ep.measure.text() == "Cancel (1/3 done)", timeout=20000)
    assert "request seq=32" in logs  # the request reached the child as the page built it
    assert ep.device.text().startswith("⚠ the machine is busy (load 3.5 on 2 cores)")
    with qtbot.waitSignal(ep.handle.cancelled, timeout=20000):
        ep.measure_latency()  # the same button cancels
    qtbot.waitUntil(lambda: ep.measure.text() == "Measure latency" and ep.measure.isEnabled(), timeout=5000)


def test_busy_warning_only_on_a_loaded_machine(monkeypatch):
    from dynastudio.core import latency

    monkeypatch.setattr(latency.os, "cpu_count", lambda: 4)
    # where there is no /proc/stat: the 1-minute load average
    monkeypatch.setattr(latency, "_cpu_jiffies", lambda: None)
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    assert latency.busy_warning() is None
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (2.6, 1.0, 1.0))
    assert "load 2.6 on 4 cores" in latency.busy_warning()


def test_busy_warning_looks_at_the_cores_now_not_the_trailing_load_average(monkeypatch):
    """Right after the studio's own training the load average is still high (it trails by a minute): that
    warned on a quiet machine. What counts is how busy the cores are while the measurement starts."""
    from dynastudio.core import latency

    monkeypatch.setattr(latency.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (1.8, 1.5, 1.0))
    samples = iter([(1000, 5000), (1010, 5100)])  # 10 of 100 jiffies busy over the window: 0.2 of 2 cores
    monkeypatch.setattr(latency, "_cpu_jiffies", lambda: next(samples))
    assert latency.busy_warning(window=0) is None
    samples = iter([(1000, 5000), (1090, 5100)])  # 0.9 of the time busy: 1.8 of 2 cores
    monkeypatch.setattr(latency, "_cpu_jiffies", lambda: next(samples))
    assert "busy cores 1.8 on 2 cores" in latency.busy_warning(window=0)
    assert latency._cpu_jiffies.__module__  # the real reader parses this machine's /proc/stat when it has one
    monkeypatch.undo()
    real = latency._cpu_jiffies()
    assert real is None or 0 <= real[0] <= real[1]


# ---- small dialogs -------------------------------------------------------------------------------
def test_open_folder_without_a_file_manager_shows_the_path_with_a_copy_button(qtbot, monkeypatch, tmp_path):
    from PySide6.QtGui import QDesktopServices, QGuiApplication
    from PySide6.QtWidgets import QLineEdit, QPushButton

    from dynastudio.studio import dialogs

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or False)
    box = dialogs.open_folder(None, tmp_path)
    qtbot.addWidget(box)
    assert opened == [str(tmp_path)] and box.isVisible()
    assert box.findChild(QLineEdit, "folderPath").text() == str(tmp_path)
    copy = box.findChild(QPushButton, "copyPath")
    copy.click()
    assert QGuiApplication.clipboard().text() == str(tmp_path) and copy.text() == "Copied" and box.isVisible()
    box.accept()
    assert dialogs.folder_dialogs == []

    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: True)  # a file manager answered: no dialog
    assert dialogs.open_folder(None, tmp_path) is None


def test_export_page_sizes_in_one_unit_and_the_target_said_once(window):
    from dynastudio.studio.style import fmt_bytes

    assert fmt_bytes(59_300_000) == "59.3 MB" and fmt_bytes(999) == "999 B" and fmt_bytes(1_500) == "1.5 kB"
    page = window.pages["export"]
    page.target.setCurrentIndex(page.target.findData("android"))
    text = page.target_help.text()
    assert text.startswith("For Android phones") and text.count("INT8") == 1
    assert page.trim.isChecked()  # the phone presets trim the vocabulary; the others do not
    page.target.setCurrentIndex(page.target.findData("intel-cpu"))
    assert "OpenVINO" in page.target_help.text() and not page.trim.isChecked()
    page.target.setCurrentIndex(page.target.findData("onnx"))  # a plain format is offered too
    assert page.target_help.text().startswith("ONNX fp32")


# ---- charts --------------------------------------------------------------------------------------
def _feed_train_page(page, total: int = 40) -> None:
    from dynastudio.core.events import EvalEnded, StageStarted, StepEnded

    labels = ("w1_d1", "w0.5_d1", "w1_d0.5", "w0.5_d0.5")
    page._on_stage_started(StageStarted("width", total))
    page._on_steps(
        [
            StepEnded("width", s, total, {l: 0.0008 - 0.00001 * s - 0.00005 * i for i, l in enumerate(labels)}, 1e-4, 0)
            for s in range(1, 21)
        ]
    )
    page._on_eval(EvalEnded("width", 20, "accuracy", {l: 0.93 + 0.01 * i for i, l in enumerate(labels)}, chance=0.52))


def test_train_charts_plain_units_sane_ranges_chance_line_aligned_legend(window, qtbot):
    page = window.pages["train"]
    window.go_to("train")
    window.resize(1280, 800)
    _feed_train_page(page)
    QApplication.processEvents()
    loss, ev = page.loss_plot.plot, page.eval_plot.plot
    for plot in (loss, ev):
        for name in ("left", "bottom"):
            axis = plot.getAxis(name)
            assert axis.autoSIPrefixScale == 1.0 and "x0.001" not in axis.labelString()
    (x0, x1), (y0, y1) = ev.getViewBox().viewRange()
    assert (x0, x1) == (0, 40)  # one evaluation so far: the axis still spans the stage, not 19.6-20.4
    assert y0 > 0.52 and y1 < 1.01  # accuracy never (visibly) above 1; chance far below is said, not squeezed in
    assert page.eval_plot.chance_note.textItem.toPlainText() == "▼ chance (majority class) 0.520, below"

    # a sub-network at the chance level: the line is in view, labelled, and the title says nothing more
    from dynastudio.core.events import EvalEnded

    page._on_eval(
        EvalEnded(
            "width", 40, "accuracy", {"w1_d1": 0.97, "w0.5_d1": 1.0, "w1_d0.5": 0.52, "w0.5_d0.5": 0.55}, chance=0.52
        )
    )
    (_, _), (y0, y1) = ev.getViewBox().viewRange()
    assert 0.0 <= y0 < 0.52 and 1.0 <= y1 < 1.04  # the 1.0 marker whole and clear of the frame (a few px)
    assert page.eval_plot.chance_line.isVisible() and page.eval_plot.chance_line.value() == 0.52
    assert "chance (majority class) 0.520" in page.eval_plot.chance_line.label.format
    assert page.eval_plot.chance_note.textItem.toPlainText() == ""
    (lx0, lx1), (ly0, _) = loss.getViewBox().viewRange()
    assert (lx0, lx1) == (0, 40) and ly0 >= 0.0

    # the legend: one row per curve, each sample level with its label
    assert page.legend.labels == ["w1_d1", "w0.5_d1", "w1_d0.5", "w0.5_d0.5"]
    for label in page.legend.labels:
        text = page.legend.findChild(QLabel, f"legend:{label}")
        row = text.parentWidget()
        sample = next(c for c in row.findChildren(QLabel) if c is not text)
        assert abs(sample.geometry().center().y() - text.geometry().center().y()) <= 2

    # the stage picker shows its whole text
    combo = page.curve_stage
    need = combo.fontMetrics().horizontalAdvance(combo.currentText())
    assert combo.currentText() == "Width distillation" and combo.width() > need + 20


def test_explore_chart_bounds_and_chance_line(window, qtbot, monkeypatch, tmp_path):
    results = {
        "metric": "accuracy",
        "chance": 0.509,
        "flops_seq_len": 64,
        "rows": [
            {
                "label": f"w{w:g}_d{d:g}",
                "width_mult": w,
                "depth_mult": d,
                "value": v,
                "flops_rel": w * d,
                "total_params": int(1e6 * w * d),
            }
            for (w, d, v) in ((1.0, 1.0, 0.97), (0.5, 1.0, 0.95), (1.0, 0.5, 0.509), (0.5, 0.5, 0.509))
        ],
    }
    state = window.state
    monkeypatch.setattr(state, "results", lambda: results)
    page = window.pages["explore"]
    page.reload()
    plot = page.plot.getPlotItem()
    (_, _), (y0, y1) = plot.getViewBox().viewRange()
    assert 1.0 <= y1 < 1.03 and y0 < 0.509  # the 1.0 markers whole, no tick above 1
    assert page.plot.chance_line.isVisible() and page.plot.chance_line.value() == 0.509
    assert "chance (majority class) 0.509" in page.plot.chance_line.label.format
    assert plot.getAxis("left").autoSIPrefixScale == 1.0
    assert "at 64 tokens" in plot.getAxis("bottom").labelString()
    assert "below the chart" not in page.encoding.text()

    # every cell well above chance: the points keep the chart, the chance level is said under it
    for r, v in zip(results["rows"], (0.97, 0.95, 0.93, 0.90)):
        r["value"] = v
    page.reload()
    (_, _), (y0, y1) = plot.getViewBox().viewRange()
    assert y0 > 0.509 and y1 <= 1.0
    assert "chance (majority class): 0.509, below the chart" in page.encoding.text()


def test_every_page_fits_a_1280x800_screen_with_results_loaded(
    window, monkeypatch, tiny_model_dir, tiny_task_files, tmp_path
):
    from dynastudio.core.prepare import new_project
    from helpers import tiny_project_config

    results = {
        "metric": "accuracy",
        "chance": 0.5,
        "flops_seq_len": 64,
        "rows": [
            {
                "label": f"w{w:g}_d{d:g}",
                "width_mult": w,
                "depth_mult": d,
                "value": 0.9 + 0.02 * w,
                "flops_rel": w * d,
                "total_params": int(2e7 * w * d),
                "latency_fp32_ms": 15.0 * w * d,
                "size_onnx_fp32_mb": 90.0 * w * d,
            }
            for w in (1.0, 0.75, 0.5, 0.25)
            for d in (1.0, 0.75, 0.5)
        ],
    }
    monkeypatch.setattr(window.state, "results", lambda: results)
    window.state.open_project(new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files)).root)
    assert not window.blocked_reason_shown("explore")
    for step in ("project", "importance", "train", "explore", "export"):
        window.go_to(step)
        window.resize(1280, 800)
        QApplication.processEvents()
        assert (window.width(), window.height()) == (1280, 800), step


def _big_csv(path, good: str = "fine"):
    from dynastudio.studio.pages.new_project import READ_APART_BYTES

    rows = "".join(f"row {i} is a {good if i % 2 else 'dull'} film,{i % 2}\n" for i in range(READ_APART_BYTES // 25))
    path.write_text("sentence,label\n" + rows, encoding="utf-8")
    assert path.stat().st_size > READ_APART_BYTES
    return path


def test_a_large_data_file_is_read_in_another_process(window, qtbot, tmp_path):
    """A file past READ_APART_BYTES: the form says it is reading, Create waits, and the check completes once
    the short job has read it (bench/huge_csv.py times the window's gaps on a million rows)."""
    window.pages["project"].tabs.setCurrentIndex(1)
    pp = window.pages["project"].form
    pp.folder.setText(str(tmp_path / "fresh"))
    pp.task_files.setChecked(True)
    big = _big_csv(tmp_path / "big.csv")
    pp.train_file.setText(str(big))
    pp.dev_file.setText(str(big))
    pp.validate()
    assert pp.task_error.text().startswith("Reading big.csv") and not pp.create_button.isEnabled()
    qtbot.waitUntil(lambda: not pp._reading and not pp.task_error.text().startswith("Reading"), timeout=60000)
    assert pp.task_error.text() == "" and pp.preview.rowCount() > 0
    assert "train rows" in pp.label_counts.text()


def test_a_new_file_read_replaces_the_one_still_running(window, qtbot, tmp_path):
    """Picking another large file while the first is being read: the first read is ended, never shown."""
    from dynastudio.studio.worker import running_job_processes

    window.pages["project"].tabs.setCurrentIndex(1)
    pp = window.pages["project"].form
    pp.task_files.setChecked(True)
    first, second = _big_csv(tmp_path / "first.csv"), _big_csv(tmp_path / "second.csv", good="great")
    pp.train_file.setText(str(first))
    pp.dev_file.setText(str(first))
    pp.validate()
    reading = pp._reading
    assert reading is not None and pp.task_error.text().startswith("Reading first.csv")
    pp.train_file.setText(str(second))
    pp.validate()
    assert reading.status == "stopped" and pp._reading is not reading
    assert pp.task_error.text().startswith("Reading second.csv")
    qtbot.waitUntil(lambda: not pp._reading and not pp.task_error.text().startswith("Reading"), timeout=60000)
    assert pp.task_error.text() == "" and "great film" in pp.preview.item(1, 0).text()
    assert len(running_job_processes()) == 0
