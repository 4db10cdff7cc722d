"""A task's data as the pipeline gets it (TaskData): the demo set, a GLUE task or the user's train and dev files."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError
from .columns import ColumnGuess, resolve_columns
from .glue import GLUE_TASKS, glue_name, load_glue_local
from .hub import load_glue_hub
from .readers import read_table
from .tables import TextTable


@dataclass(frozen=True)
class TaskData:
    """A task's train and dev tables and how predictions on them are scored: read once, used by every stage."""

    name: str
    train: TextTable
    dev: TextTable
    metric: str
    label_names: tuple[str, ...] | None
    is_regression: bool
    columns: ColumnGuess | None = None  # files only: which column is which, and what was guessed

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names or ())


def demo_resource(name: str):
    """A file of the synthetic demo set, shipped as package data (`dynastudio/core/demo/`)."""
    return resources.files("dynastudio.core") / "demo" / name


def load_task_data(cfg: DataConfig) -> TaskData:
    """The task `cfg` names, read and checked; a user's mistake in it is a ConfigError or a one-line DataError."""
    if cfg.kind == "demo":
        with (
            resources.as_file(demo_resource("train.tsv")) as train_path,
            resources.as_file(demo_resource("dev.tsv")) as dev_path,
        ):
            train, names, _ = read_table(train_path, ("sentence",), "label")
            dev, _, _ = read_table(dev_path, ("sentence",), "label", names)
        return TaskData("demo", train, dev, "accuracy", names, False)

    if cfg.kind == "glue":
        name = glue_name(cfg.task)
        spec = GLUE_TASKS[name]
        train, dev = load_glue_local(name, cfg.data_dir) if cfg.data_dir else load_glue_hub(name)
        return TaskData(name, train, dev, spec.metric, spec.label_names, spec.label_names is None)

    if cfg.kind == "files":
        if not cfg.train or not cfg.dev:
            raise ConfigError("data: kind 'files' needs both a train file and a dev file (--train and --dev)")
        columns = resolve_columns(cfg)
        train, names, regression = read_table(cfg.train, columns.text, columns.label)
        dev, _, _ = read_table(cfg.dev, columns.text, columns.label, names, regression=regression)
        metric = "pearson_spearman" if regression else "accuracy"
        return TaskData(Path(cfg.train).stem, train, dev, metric, names, regression, columns)

    raise ConfigError(f"data.kind: unknown kind '{cfg.kind}': choose demo, glue or files")
