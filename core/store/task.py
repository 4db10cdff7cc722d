"""A project's task facts (task.json): name, metric, labels, row counts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ProjectError

TASK_FILE = "task.json"


@dataclass(frozen=True)
class TaskInfo:
    """What the engine needs to know about a task once its rows are encoded (task.json)."""

    name: str
    metric: str
    label_names: tuple[str, ...]
    is_regression: bool
    train_rows: int
    dev_rows: int

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @staticmethod
    def of(task) -> TaskInfo:
        """From a loaded task (core.data's TaskData: name, metric, label_names, is_regression, train, dev)."""
        return TaskInfo(
            task.name, task.metric, tuple(task.label_names or ()), task.is_regression, len(task.train), len(task.dev)
        )

    def to_json(self) -> str:
        d = asdict(self)
        d["labels"] = list(d.pop("label_names"))
        return json.dumps(d, indent=2)


def read_task(root: Path) -> TaskInfo:
    """The task.json of the project folder `root`."""
    path = Path(root) / TASK_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return TaskInfo(
            d["name"],
            d["metric"],
            tuple(d.get("labels") or ()),
            bool(d["is_regression"]),
            int(d["train_rows"]),
            int(d["dev_rows"]),
        )
    except FileNotFoundError:
        raise ProjectError(f"{path}: missing: create the project again (dynastudio new)") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ProjectError(f"{path}: corrupted: delete it and create the project again (dynastudio new)") from None
