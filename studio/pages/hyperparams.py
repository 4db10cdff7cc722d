"""The new-project form's hyper-parameter editors: one per TrainConfig field, filled from a profile, parsed back."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QWidget

from dynastudio.core.config import DEPTH_RULES, PRECISIONS, TrainConfig
from dynastudio.core.errors import ConfigError

CHOICES = {
    "depth_rule": DEPTH_RULES,
    "importance_split": ("heldout", "dev"),
    "device": ("auto", "cpu", "cuda"),
    "precision": PRECISIONS,
}
# what an empty box of an optional setting stands for
EMPTY_MEANS = {"max_train_examples": "all", "warmup_frac": "the model's default: 0.06 for RoBERTa, 0 for BERT"}
# the hyper-parameters most people touch first; the rest sit under "More"
MAIN_FIELDS = (
    "batch_size",
    "max_seq_length",
    "teacher_epochs",
    "teacher_lr",
    "width_epochs",
    "width_lr",
    "depth_epochs",
    "depth_lr",
    "width_mults",
    "depth_mults",
    "max_train_examples",
    "seed",
)


class HyperParams(QWidget):
    """One editor per TrainConfig field, filled from a profile; `values()` parses them, naming the bad field."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "profile"}
        self.editors: dict[str, QWidget] = {}
        main, more = QFormLayout(), QFormLayout()
        for name, f in self.fields.items():
            if name in CHOICES:
                w = QComboBox()
                w.addItems(list(CHOICES[name]))
                w.currentIndexChanged.connect(lambda _: self.changed.emit())
            elif str(f.type) == "bool":
                w = QCheckBox()
                w.toggled.connect(lambda _: self.changed.emit())
            else:
                w = QLineEdit()
                w.textChanged.connect(lambda _: self.changed.emit())
                if "None" in str(f.type):
                    w.setPlaceholderText(EMPTY_MEANS.get(name, "none"))
            w.setObjectName(f"hp_{name}")
            w.setToolTip(f"train.{name} ({f.type})")
            self.editors[name] = w
            (main if name in MAIN_FIELDS else more).addRow(name.replace("_", " "), w)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(main)
        lay.addSpacing(20)
        lay.addLayout(more)

    def load(self, t: TrainConfig) -> None:
        for name, w in self.editors.items():
            v = getattr(t, name)
            w.blockSignals(True)
            if isinstance(w, QComboBox):
                w.setCurrentText(str(v))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(v))
            else:
                w.setText(
                    ""
                    if v is None
                    else ",".join(f"{x:g}" for x in v)
                    if isinstance(v, tuple)
                    else f"{v:g}"
                    if isinstance(v, float)
                    else str(v)
                )
            w.blockSignals(False)
        self.changed.emit()

    def values(self) -> dict:
        out = {}
        for name, w in self.editors.items():
            kind = str(self.fields[name].type)
            if isinstance(w, QComboBox):
                out[name] = w.currentText()
                continue
            if isinstance(w, QCheckBox):
                out[name] = w.isChecked()
                continue
            text = w.text().strip()
            try:
                if "tuple" in kind:
                    out[name] = tuple(float(x) for x in text.split(",") if x.strip())
                elif "None" in kind and not text:
                    out[name] = None
                elif kind.startswith("int"):
                    out[name] = int(text)
                elif kind.startswith("float"):
                    out[name] = float(text)
                else:
                    out[name] = text
            except ValueError:
                what = (
                    "comma-separated numbers such as 1.0,0.75,0.5"
                    if "tuple" in kind
                    else ("a whole number" if kind.startswith("int") else "a number such as 2e-5")
                )
                raise ConfigError(f"train.{name}: '{text}' is not {what}") from None
        return out
