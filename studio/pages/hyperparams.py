"""The new-project form's hyper-parameter editors: one per TrainConfig field, filled from a profile, parsed back."""

from __future__ import annotations

import dataclasses
import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QWidget

from dynastudio.core.config import DEPTH_RULES, PRECISIONS, STAGE_ORDERS, TrainConfig
from dynastudio.core.errors import ConfigError

CHOICES = {
    "depth_rule": DEPTH_RULES,
    "stage_order": STAGE_ORDERS,
    "importance_split": ("heldout", "dev"),
    "device": ("auto", "cpu", "cuda"),
    "precision": PRECISIONS,
}
# what an empty box of an optional setting stands for
EMPTY_MEANS = {
    "max_train_examples": "all",
    "warmup_frac": "the model's default: 0.06 for RoBERTa, 0 for BERT",
    "teacher_lr": "auto: a trial of 2e-5 to 2e-4, then two whole teachers",
    "augment": "auto: more copies for a smaller task (none from 20,000 rows)",
}
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
    "augment",
    "seed",
)


# what each setting does and when to change it, in one line (the tooltip of its editor and of its name)
HELP = {
    "seed": "Seeds the row order, the held-out importance rows and the new classifier head; "
    "change it to see how much a result owes to chance.",
    "batch_size": "Rows per training step in every stage; lower it when training runs out of memory, "
    "raise it on a large GPU (often with a higher learning rate).",
    "eval_batch_size": "Rows per batch when scoring the dev set (no training, so it can be larger); "
    "lower it only if evaluation runs out of memory. A GPU uses at least 64k tokens' worth.",
    "max_seq_length": "Tokens kept per row, longer rows are cut; time grows with it: 64 suits short sentences, "
    "128 is the paper's, raise it for long texts.",
    "max_train_examples": "Train on at most this many rows (a random subset); empty = all. "
    "Set it for a quick trial on a large file.",
    "importance_split": "Rows that score head and neuron importance: heldout = a slice of train the teacher never "
    "sees; dev = the dev set, when train is too small to spare rows.",
    "importance_examples": "How many rows score importance (held out: at most a tenth of train); "
    "more gives steadier scores, a few hundred to 2000 is plenty.",
    "reuse_importance_rows": "On: the held-out importance rows also train the width, depth and sub-network stages "
    "(only the teacher must not see them); off keeps them out of every stage, as before 0.3.",
    "teacher_epochs": "Passes over train when fine-tuning the full model (the teacher) on the task; "
    "2-3 usually, more for a small data set (unused if the model is already fine-tuned).",
    "teacher_lr": "Peak learning rate of the teacher's fine-tuning (the paper: 2e-5); "
    "lower it if the teacher's dev score collapses or jumps around. Empty (the paper profile's default): "
    "a short trial of 2e-5, 5e-5, 1e-4 and 2e-4 on part of train, then a whole teacher at each of the best two; "
    "the one scoring better on the held-out train rows is kept (a small model often needs 1e-4).",
    "width_epochs": "Passes over train while the teacher is distilled into every width (stage 1); "
    "more helps the narrowest widths most.",
    "width_lr": "Peak learning rate of the width stage (the paper: 2e-5); lower it if its losses grow.",
    "depth_epochs": "Passes over train while the width model is distilled into every width x depth (stage 2); "
    "more helps the shallowest sub-networks most.",
    "depth_lr": "Peak learning rate of the depth stage (the paper: 2e-5); lower it if its losses grow.",
    "subnet_epochs": "Optional plain fine-tuning of every sub-network on the labels after distillation; "
    "0 skips it (the paper's default), try 1 if the small sub-networks lag.",
    "subnet_lr": "Peak learning rate of the optional sub-network fine-tuning (used only when its epochs are above 0).",
    "int8_epochs": "Optional quantization-aware distillation: every sub-network trained as its INT8 file computes "
    "(INT8 weights and activations emulated), learning from its own full-precision self, for INT8 exports that agree "
    "with fp32; 0 skips it.",
    "augment": "Augmented copies of each training row (words swapped for the model's own masked-LM predictions or "
    "nearest input embeddings, as the paper's GLUE runs did) on which the width, depth and INT8-aware stages learn "
    "the teacher's outputs; helps small tasks most, and each copy adds a pass's worth of time to those stages. "
    "0 = none; empty = by the task's size (up to 20 copies, at most 20,000 rows).",
    "int8_lr": "Peak learning rate of the INT8-aware stage (used only when its epochs are above 0).",
    "warmup_frac": "Share of each stage's steps over which the learning rate ramps up from 0; empty = the model "
    "family's default (6 % for RoBERTa, none for BERT). Try 0.06-0.1 if early steps are unstable.",
    "weight_decay": "AdamW weight decay in every stage (0.01 as in the paper); rarely worth changing.",
    "max_grad_norm": "Gradients are clipped to this norm at each step (1.0 as in the paper); rarely worth changing.",
    "width_l1": "Width stage: weight of matching the teacher's predictions (soft cross-entropy on the logits); "
    "the paper uses 1.",
    "width_l2": "Width stage: weight of matching the teacher's hidden states and embeddings (MSE); the paper uses 0.1, "
    "0 matches the predictions only and trains a little faster.",
    "depth_l1": "Depth stage: weight of matching the width model's predictions (soft cross-entropy on the logits); "
    "the paper uses 1.",
    "depth_l2": "Depth stage: weight of matching its hidden states at the layers kept (MSE); the paper uses 1, "
    "lower it if the shallow sub-networks score poorly.",
    "width_mults": "Widths trained, as the share of attention heads and FFN neurons kept (must include 1); "
    "fewer values train faster.",
    "depth_mults": "Depths trained, as the share of layers kept (must include 1); fewer values train faster.",
    "depth_rule": "Which layers a shallower sub-network keeps: paper keeps 0, 2, 4 of 6 at depth 0.5 (the last is "
    "dropped), keep-last keeps 1, 3, 5; paper scored 1.6 points better on SST-2.",
    "stage_order": "paper: width first (stage 1), then every width and depth learning from the width model "
    "(stage 2), as the paper does; joint: no width stage, every width and depth learns from the teacher at once "
    "for the epochs of both stages (the same number of updates). Measured in bench/results/stage_order_*.md.",
    "sandwich": "Random shapes (a trained depth, per layer its own heads and neurons) distilled beside the 12 cells "
    "at each step of the depth stage, so the shapes between the cells that a latency search explores are trained too; "
    "each adds about a twelfth to a depth step. 0 = the cells only.",
    "checkpoint_every": "Optimizer steps between mid-stage checkpoints: Stop or a crash loses at most this many; "
    "lower it on a slow machine.",
    "checkpoint_minutes": "A mid-stage checkpoint is also written at least this often by the clock, "
    "so slow steps lose little to a crash.",
    "device": "auto trains on a CUDA GPU when there is one, else on the CPU; cpu leaves the GPU to other work.",
    "precision": "Number format for training: auto = bf16 on a GPU or CPU that computes it natively (1.2-1.6x faster on "
    "such a CPU), fp16 with loss scaling on older GPUs, fp32 on other CPUs; pick fp32 if losses turn NaN.",
    "group_by_length": "Batches rows of similar length together: less padding, faster steps, the order still set by "
    "the seed; off gives fully random batches.",
    "report_to": "Where a run's losses, learning rate and dev metrics also go: none, tensorboard, mlflow, or both "
    "comma separated; set it to watch a run on a server in the tools you already use.",
}


def tooltip(name: str, kind: str) -> str:
    """The one-line help, then the setting's name in project.json (rich text, so Qt wraps it)."""
    return f"<p>{html.escape(HELP.get(name, ''))}</p><p style='color:#666'>train.{name} ({html.escape(kind)})</p>"


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
            w.setToolTip(tooltip(name, str(f.type)))
            self.editors[name] = w
            label = QLabel(name.replace("_", " "))
            label.setToolTip(w.toolTip())  # the name is where people hover first
            (main if name in MAIN_FIELDS else more).addRow(label, w)
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
