"""What a new user meets first (issue 10): column guessing in the form, a form that holds still,
live stage state, readable charts with a chance line, latency progress and cancel, small dialogs."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def _qa_rows(n: int = 12) -> str:
    return "".join(f"is row {i} wet,row {i} is {'wet' if i % 2 else 'dry'} today,{'yes' if i % 2 else 'no'}\n" for i in range(n))


# ---- the New-project form ------------------------------------------------------------------------
def test_form_guesses_a_pair_and_never_gives_a_column_two_roles(window, tmp_path):
    from dynastudio.studio.pages.project import NONE

    pp = window.pages["project"]
    pp.tabs.setCurrentIndex(1)
    pp.task_files.setChecked(True)
    qa = tmp_path / "qa.csv"
    qa.write_text("question,passage,label\n" + _qa_rows(), encoding="utf-8")
    pp.train_file.setText(str(qa))
    pp.dev_file.setText(str(qa))
    assert (pp.text_a.currentText(), pp.text_b.currentText(), pp.label_col.currentText()) == ("question", "passage", "label")
    assert "Guessed from the file: text = question + passage (a sentence pair), label = label" in pp.column_note.text()
    pp.validate()
    assert not pp.task_error.text() and pp.preview.columnCount() == 3

    # no label column: nothing lands in the label role, and the message says what to pick
    unlabelled = tmp_path / "nolabel.csv"
    unlabelled.write_text("question,passage\n" + "".join(",".join(r.split(",")[:2]) + "\n" for r in _qa_rows().splitlines()),
                          encoding="utf-8")
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
    pp = window.pages["project"]
    pp.tabs.setCurrentIndex(1)
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
