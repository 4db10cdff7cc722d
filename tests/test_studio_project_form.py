"""The Project page's new-project form as a new user met it (issue 23): the wheel over a picker, the column line,
the way to the first thing to fix, hyper-parameter help, dev label counts, the form after Create, the first screen."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QScrollArea  # noqa: E402

from helpers import register_test_job  # noqa: E402


def _csv(path, n: int, pos_every: int = 3):
    rows = "".join(
        f"row {i} was a {'dull' if i % pos_every == 0 else 'great'} film,{'neg' if i % pos_every == 0 else 'pos'}\n"
        for i in range(n)
    )
    path.write_text("sentence,label\n" + rows, encoding="utf-8")
    return path


def _files_form(window, tmp_path):
    """The form on a train/dev CSV pair, the window short enough that the form scrolls."""
    page = window.pages["project"]
    page.tabs.setCurrentIndex(1)
    window.resize(1100, 600)
    pp = page.form
    pp.folder.setText(str(tmp_path / "fresh"))
    pp.task_files.setChecked(True)
    pp.train_file.setText(str(_csv(tmp_path / "train.csv", 30)))
    pp.dev_file.setText(str(_csv(tmp_path / "dev.csv", 12, pos_every=2)))
    pp.validate()
    QApplication.processEvents()
    return pp


def _wheel(widget, dy: int = -120) -> None:
    """A wheel notch over the middle of `widget` (negative dy: scrolling down)."""
    centre = widget.rect().center()
    event = QWheelEvent(
        QPointF(centre),
        QPointF(widget.mapToGlobal(centre)),
        QPoint(0, 0),
        QPoint(0, dy),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


# ---- bug 2: the wheel over the pickers -------------------------------------------------------------------
def test_the_wheel_over_an_unfocused_picker_scrolls_the_form(window, tmp_path):
    pp = _files_form(window, tmp_path)
    picked = (pp.text_a.currentText(), pp.text_b.currentText(), pp.label_col.currentText())
    assert picked == ("sentence", "(none)", "label")
    bar = pp.findChild(QScrollArea).verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0
    for combo in (pp.label_col, pp.text_b, pp.label_col, pp.text_a):  # what a user scrolling down passes over
        _wheel(combo)
    precision = pp.hp.editors["precision"]
    _wheel(precision)
    assert (pp.text_a.currentText(), pp.text_b.currentText(), pp.label_col.currentText()) == picked
    assert precision.currentText() == "auto"
    assert bar.value() > 0  # the form scrolled instead
    pp.validate()
    assert pp.task_error.text() == ""

    # a picker the user clicked into (it has focus) still takes the wheel
    window.activateWindow()
    pp.label_col.setFocus()
    QApplication.processEvents()
    if pp.label_col.hasFocus():  # focus needs an active window, which some platforms never give
        _wheel(pp.label_col, dy=120)
        assert pp.label_col.currentText() != "label"


def test_the_column_line_follows_the_pickers(window, tmp_path):
    pp = _files_form(window, tmp_path)
    assert pp.column_note.text().startswith("Guessed from the file: text = sentence, label = label.")
    pp.label_col.setCurrentText("(none)")
    assert pp.column_note.text().startswith("Your pick: text = sentence.")
    pp.label_col.setCurrentText("sentence")
    note = pp.column_note.text()
    assert note.startswith("Your pick: text = sentence, label = sentence.")
    assert "The file's guess was text = sentence, label = label." in note
    pp.label_col.setCurrentText("label")
    assert pp.column_note.text().startswith("Guessed from the file:")


def test_things_to_fix_takes_you_to_the_first_field_in_error(window, tmp_path):
    pp = _files_form(window, tmp_path)
    pp.label_col.setCurrentText("sentence")  # the first thing to fix sits low in the form
    pp.validate()
    QApplication.processEvents()
    status = pp.create_status.text()
    assert "1 thing to fix above" in status and "<a " in status
    bar = pp.scroll_area.verticalScrollBar()
    bar.setValue(bar.maximum())  # the user is down at the Create button
    viewport = pp.scroll_area.viewport()
    assert pp.label_col.mapTo(viewport, QPoint(0, 0)).y() < 0  # the picker is out of sight, above
    pp.create_status.linkActivated.emit("#first-problem")
    QApplication.processEvents()
    assert pp.label_col.window().focusWidget() is pp.label_col
    top = pp.label_col.mapTo(viewport, QPoint(0, 0)).y()
    assert 0 <= top and top + pp.label_col.height() <= viewport.height()


# ---- hyper-parameters: help in the tooltips ------------------------------------------------------------
def test_every_hyper_parameter_tooltip_says_what_it_does(window):
    hp = window.pages["project"].form.hp
    for name, editor in hp.editors.items():
        shown = re.sub(r"<[^>]+>", " ", editor.toolTip())
        said = shown.replace(f"train.{name}", "").replace(f"({hp.fields[name].type})", "").strip()
        assert len(said) > 50, f"{name}: the tooltip says only {shown.strip()!r}"
    from dynastudio.studio.pages.hyperparams import HELP

    for name in (
        "width_l1",
        "width_l2",
        "depth_l1",
        "depth_l2",
        "importance_split",
        "reuse_importance_rows",
        "group_by_length",
        "precision",
        "teacher_lr",
        "teacher_epochs",
        "width_lr",
        "width_epochs",
        "depth_lr",
        "depth_epochs",
        "batch_size",
        "max_seq_length",
    ):
        assert HELP[name] in hp.editors[name].toolTip().replace("&#x27;", "'")


# ---- dev label counts beside train's ----------------------------------------------------------------------
def test_the_dev_files_label_counts_are_shown_beside_trains(window, tmp_path):
    pp = _files_form(window, tmp_path)
    assert pp.task_error.text() == ""
    lines = pp.label_counts.text().splitlines()
    assert lines == [
        "30 train rows; label counts: neg: 10 (33 %) · pos: 20 (67 %)",
        "12 dev rows; label counts: neg: 6 (50 %) · pos: 6 (50 %)",
    ]


# ---- after Create: a form ready for the next project -------------------------------------------------------
def test_after_create_the_form_is_ready_for_the_next_project(qtbot, monkeypatch, tmp_path):
    from dynastudio.studio.pages.new_project import NewProjectForm
    from dynastudio.studio.state import StudioState

    register_test_job(monkeypatch, "create", "quick", request_type="CreateRequest")
    state = StudioState()
    form = NewProjectForm(state)
    qtbot.addWidget(form)
    form.show()
    try:
        form.folder.setText(str(tmp_path / "first"))
        assert form.validate() == [] and form.create_button.isEnabled()
        with qtbot.waitSignal(form.created, timeout=30000):
            qtbot.mouseClick(form.create_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not state.runner.is_running(), timeout=10000)
        form.validate()
        assert form.folder.text() == ""  # the old folder is not offered again
        assert form.folder_error.text() == ""  # and no red for a form the user has not touched since
        assert not form.create_button.isEnabled()
        assert form.create_status.text().startswith("Created 42.")  # the fake create job's answer
        form.folder.setText(str(tmp_path / "second"))
        assert form.validate() == [] and form.create_button.isEnabled()
    finally:
        form.shut_down()
        state.runner.shutdown()


# ---- the first screen --------------------------------------------------------------------------------------
def test_an_untouched_form_shows_no_red(window, qtbot):
    page = window.pages["project"]
    page.tabs.setCurrentIndex(1)
    pp = page.form
    qtbot.wait(400)  # past the form's debounced check
    assert pp.folder_error.text() == "" and not pp.create_button.isEnabled()
    assert "fix" not in pp.create_status.text()
    pp.folder.setText("x")
    pp.folder.setText("")
    pp.validate()
    assert pp.folder_error.text() == "Choose the folder the project will live in."


def test_while_the_demo_is_created_the_page_says_so(window, qtbot, monkeypatch, tmp_path):
    register_test_job(monkeypatch, "create", "slow", request_type="CreateRequest")
    window.confirm_close = lambda handle: "stop"
    page = window.pages["project"]
    assert page.tabs.currentIndex() == 1  # no project yet: the form
    page.open_or_create_demo(tmp_path / "demo")
    handle = window.state.runner.current
    assert handle is not None and handle.is_running()
    try:
        qtbot.wait(400)  # past the form's debounced check
        assert page.tabs.currentIndex() == 0
        assert "Creating the demo project" in page.current.text() and str(tmp_path / "demo") in page.current.text()
        assert page.form.folder_error.text() == ""
        window.state.liveChanged.emit()  # a redraw while it runs keeps the message
        assert "Creating the demo project" in page.current.text()
    finally:
        with qtbot.waitSignal(handle.ended, timeout=10000):
            handle.stop()
    assert "No project open" in page.current.text()


def test_a_project_opened_by_a_relative_path_is_named_by_its_absolute_one(window, tmp_path, monkeypatch):
    # a new user's `dynastudio gui demo` gave the title "demo" while export folders and the recent list said
    # "/home/.../demo": one project, two names
    from test_store import write_project

    write_project(tmp_path / "rel")
    monkeypatch.chdir(tmp_path)
    project = window.state.open_project("rel")
    assert project.root.is_absolute() and project.root == (tmp_path / "rel").resolve()
    assert str((tmp_path / "rel").resolve()) in window.windowTitle()


def test_an_emptied_teacher_lr_box_means_a_trial_chooses_it(qtbot):
    from dynastudio.studio.pages.new_project import NewProjectForm
    from dynastudio.studio.state import StudioState

    form = NewProjectForm(StudioState())
    qtbot.addWidget(form)
    box = form.hp.editors["teacher_lr"]
    assert box.text() == "5e-05" and "trial" in box.placeholderText()  # the quick profile's rate until emptied
    box.setText("")
    assert form.config().train.teacher_lr is None  # not the profile's 5e-5 again
    box.setText("3e-4")
    assert form.config().train.teacher_lr == 3e-4


def test_the_form_takes_augmentation_and_an_unlabeled_file(qtbot, tmp_path):
    from dynastudio.studio.pages.new_project import NewProjectForm
    from dynastudio.studio.state import StudioState

    form = NewProjectForm(StudioState())
    qtbot.addWidget(form)
    box = form.hp.editors["augment"]
    assert box.text() == "0" and "auto" in box.placeholderText()  # quick's 0 until emptied
    box.setText("")
    assert form.config().train.augment is None
    box.setText("3")
    assert form.config().train.augment == 3
    assert form.config().data.unlabeled is None
    form.unlabeled_file.setText(str(tmp_path / "missing.txt"))
    form._touched = True
    assert any("missing.txt: file not found" in e for e in form.validate())
    (tmp_path / "reviews.txt").write_text("a fine film\n", encoding="utf-8")
    form.unlabeled_file.setText(str(tmp_path / "reviews.txt"))
    assert not any("reviews.txt" in e for e in form.validate())
    assert form.config().data.unlabeled == str((tmp_path / "reviews.txt").resolve())
