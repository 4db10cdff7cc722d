"""GLUE: its tasks' names, layouts and metrics, and reading a task from a local copy of the GLUE files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from .readers import at_line, check_file, finish_table, label_what, read_delimited
from .tables import TextTable


@dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task's text and label live, locally (raw GLUE TSVs) and on the hub."""

    folder: str  # folder name in the standard GLUE download
    columns: tuple  # text columns of the local TSV: header names, or column numbers when header=False
    label: str | int  # label column of the local TSV: a header name or a column number (-1 = last field)
    label_names: tuple[str, ...] | None  # index order of HF `glue`; None = regression
    metric: str
    hf_columns: tuple[str, ...]
    header: bool = True
    dev_file: str = "dev.tsv"
    hf_dev_split: str = "validation"
    # QQP's train.tsv has a handful of broken rows; the reference loaders skip them too.
    skip_short_rows: bool = False


GLUE_TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask("SST-2", ("sentence",), "label", ("0", "1"), "accuracy", ("sentence",)),
    # CoLA ships without a header: source, label, original judgement, sentence.
    "cola": GlueTask("CoLA", (3,), 1, ("0", "1"), "matthews", ("sentence",), header=False),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), "f1", ("sentence1", "sentence2")),
    "rte": GlueTask(
        "RTE",
        ("sentence1", "sentence2"),
        "label",
        ("entailment", "not_entailment"),
        "accuracy",
        ("sentence1", "sentence2"),
    ),
    "qnli": GlueTask(
        "QNLI",
        ("question", "sentence"),
        "label",
        ("entailment", "not_entailment"),
        "accuracy",
        ("question", "sentence"),
    ),
    "qqp": GlueTask(
        "QQP",
        ("question1", "question2"),
        "is_duplicate",
        ("0", "1"),
        "f1",
        ("question1", "question2"),
        skip_short_rows=True,
    ),
    # MNLI's label is gold_label, the last field; taking the last field (as the reference
    # processors do) stays right whether or not the annotator columns label1..label5 are there.
    "mnli": GlueTask(
        "MNLI",
        ("sentence1", "sentence2"),
        -1,
        ("entailment", "neutral", "contradiction"),
        "accuracy",
        ("premise", "hypothesis"),
        dev_file="dev_matched.tsv",
        hf_dev_split="validation_matched",
    ),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2"), -1, None, "pearson_spearman", ("sentence1", "sentence2")),
}


def glue_name(task: str | None) -> str:
    """The task's key in GLUE_TASKS, however it was spelt ('SST-2', 'sst_2' -> 'sst2')."""
    if not task:
        raise ConfigError(f"data.task: name a GLUE task: {', '.join(GLUE_TASKS)}")
    key = task.strip().lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task '{task}': choose one of {', '.join(GLUE_TASKS)}")
    return key


def _glue_folder(data_dir: str, name: str) -> Path:
    spec = GLUE_TASKS[name]
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{data_dir}: folder not found: point data_dir at the GLUE folder (the one holding {spec.folder}/)"
        )
    wanted = {spec.folder.lower(), name}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    if (root / "train.tsv").is_file():
        return root  # data_dir is the task folder itself
    raise DataError(
        f"{data_dir}: no {spec.folder}/ folder with train.tsv and {spec.dev_file}: "
        f"point data_dir at the GLUE folder or at the {spec.folder} folder itself"
    )


def load_glue_local(name: str, data_dir: str) -> tuple[TextTable, TextTable]:
    """Train and dev of a task from the raw GLUE TSVs (data_dir: the GLUE folder, or the task's own folder)."""
    spec = GLUE_TASKS[name]
    folder = _glue_folder(data_dir, name)
    tables = []
    for file_name in ("train.tsv", spec.dev_file):
        path = folder / file_name
        check_file(path)
        rows = read_delimited(
            path,
            "\t",
            csv.QUOTE_NONE,
            spec.header,
            spec.columns,
            spec.label,
            strict_width=False,
            skip_short=spec.skip_short_rows,
        )
        table, _, _ = finish_table(
            rows, str(path), at_line, spec.label_names, spec.label_names is None, label_what(spec.label)
        )
        tables.append(table)
    return tables[0], tables[1]
