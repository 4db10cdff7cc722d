"""A project's task, read and tokenized once: project creation, and the encoded splits cached in the project folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from . import runtime
from .config import ProjectConfig
from .data.encoding import Encoded, encode
from .data.tables import split_heldout, subset
from .data.task import TaskData, load_task_data
from .errors import InternalError, ModelError, ProjectError
from .events import LogMessage, null_sink
from .models import load_model_config, load_tokenizer, pick_device
from .project import Project
from .store import TASK_FILE, TaskInfo, atomic_write_text
from .tensorfiles import atomic_save_tensors, load_tensors

SPLITS = ("train", "heldout", "dev")
CACHE_VERSION = 1


# ---- the cache ----------------------------------------------------------------------------------
def split_rows(task: TaskData, t) -> dict:
    """{train, heldout, dev} tables. The importance rows never overlap training rows unless they are dev rows."""
    train = task.train
    if t.importance_split == "heldout":
        n = min(t.importance_examples, max(1, len(train) // 10))
        train, held = split_heldout(train, n, t.seed)
    else:
        held = subset(task.dev, t.importance_examples, t.seed)
    if t.max_train_examples is not None:
        train = subset(train, t.max_train_examples, t.seed)
    return {"train": train, "heldout": held, "dev": task.dev}


def unused_train_rows(task: TaskData, t, n: int):
    """Up to `n` rows of the train file that no stage trains on and that are not the held-out importance rows: what
    max_train_examples left out (drawn in the same seeded order as `split_rows`). None when every train row is used."""
    if t.max_train_examples is None:
        return None
    train = task.train
    if t.importance_split == "heldout":
        train, _ = split_heldout(train, min(t.importance_examples, max(1, len(train) // 10)), t.seed)
    if t.max_train_examples >= len(train):
        return None
    order = np.random.default_rng(t.seed).permutation(len(train))
    rest = order[max(0, int(t.max_train_examples)) :]
    return train.select(np.sort(rest[:n])) if len(rest) else None


def _tokenizer_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_key(project: Project) -> str:
    """Everything the encoded rows depend on: the data settings, the split settings, the tokenizer."""
    cfg = project.config
    t = cfg.train
    key = {
        "version": CACHE_VERSION,
        # the unlabeled file is encoded on its own (augmentation.unlabeled_rows): setting it keeps this cache
        "data": {k: v for k, v in asdict(cfg.data).items() if k != "unlabeled"},
        "max_seq_length": t.max_seq_length,
        "seed": t.seed,
        "importance_split": t.importance_split,
        "importance_examples": t.importance_examples,
        "max_train_examples": t.max_train_examples,
        "tokenizer": _tokenizer_digest(project.tokenizer_dir) if project.tokenizer_dir.is_dir() else cfg.model,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:24]


def _pack(enc: Encoded, name: str) -> dict[str, torch.Tensor]:
    lengths = np.array([len(r) for r in enc.input_ids], dtype=np.int64)
    flat = np.concatenate(enc.input_ids).astype(np.int32) if len(enc) else np.zeros(0, np.int32)
    out = {f"{name}.input_ids": torch.from_numpy(flat), f"{name}.lengths": torch.from_numpy(lengths)}
    if enc.token_type_ids is not None and len(enc):
        out[f"{name}.token_type_ids"] = torch.from_numpy(np.concatenate(enc.token_type_ids).astype(np.int8))
    labels = np.asarray(enc.labels, dtype=np.float64 if enc.is_regression else np.int64)
    out[f"{name}.labels"] = torch.from_numpy(labels.reshape(-1))
    return out


def _unpack(t: dict[str, torch.Tensor], name: str, is_regression: bool) -> Encoded:
    lengths = t[f"{name}.lengths"].numpy()
    cuts = np.cumsum(lengths)[:-1]
    ids = np.split(t[f"{name}.input_ids"].numpy().astype(np.int64), cuts) if len(lengths) else []
    types = None
    if f"{name}.token_type_ids" in t:
        types = np.split(t[f"{name}.token_type_ids"].numpy().astype(np.int64), cuts)
    labels = t[f"{name}.labels"].numpy()
    return Encoded(ids, types, labels.tolist(), is_regression)


def build_cache(project: Project, tokenizer, task: TaskData | None = None, events=null_sink) -> dict[str, Encoded]:
    """Read the task's files (unless `task` is given), split, tokenize, and write cache/inputs.safetensors.
    A large task says how far the tokenizing is (every 10 %, from 100,000 rows up)."""
    cfg = project.config
    task = task if task is not None else load_task_data(cfg.data)
    tables = split_rows(task, cfg.train)
    total = sum(len(tables[s]) for s in SPLITS)
    state = {"done": 0, "said": 0}

    def progress(rows: int) -> None:
        state["done"] += rows
        if total >= 100_000 and state["done"] - state["said"] >= total // 10:
            state["said"] = state["done"]
            events(LogMessage(f"tokenized {state['done']:,} of {total:,} rows"))

    encoded = {s: encode(tables[s], tokenizer, cfg.train.max_seq_length, progress=progress) for s in SPLITS}
    for s in SPLITS:
        encoded[s].is_regression = task.is_regression
    tensors: dict[str, torch.Tensor] = {}
    for s in SPLITS:
        tensors.update(_pack(encoded[s], s))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    meta = {
        "key": cache_key(project),
        "is_regression": json.dumps(task.is_regression),
        "pad_id": str(pad),
        "rows": json.dumps({s: len(encoded[s]) for s in SPLITS}),
    }
    atomic_save_tensors(project.inputs_cache_path, tensors, meta)
    return encoded


def read_cache(project: Project) -> tuple[dict[str, Encoded], int] | None:
    """(splits, pad id) from the cache when it matches the project's settings; None when missing or stale."""
    path = project.inputs_cache_path
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # a torn or foreign file is rebuilt, never trusted
        return None
    if meta.get("key") != cache_key(project):
        return None
    tensors = load_tensors(path, "the encoded task cache")
    regression = json.loads(meta["is_regression"])
    return {s: _unpack(tensors, s, regression) for s in SPLITS}, int(meta["pad_id"])


# ---- what a stage job gets ----------------------------------------------------------------------
@dataclass
class RunInputs:
    """A project's prepared inputs: task facts, the encoded splits, the device. Made by `prepare_inputs`."""

    project: Project
    task: TaskInfo
    train: Encoded
    heldout: Encoded
    dev: Encoded
    pad_id: int
    device: torch.device

    @property
    def cfg(self) -> ProjectConfig:
        return self.project.config

    @cached_property
    def tokenizer(self):
        return project_tokenizer(self.project)

    @cached_property
    def student_rows(self) -> Encoded:
        """What the stages after rewiring train on: the training rows, and the held-out importance rows too unless
        train.reuse_importance_rows is off. Only the teacher must not see the rows its importance is scored on."""
        t = self.cfg.train
        if t.importance_split != "heldout" or not t.reuse_importance_rows or not len(self.heldout):
            return self.train
        return self.train.joined(self.heldout)

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: the project's precision setting resolved for this device."""
        return runtime.resolve_precision(self.cfg.train.precision, self.device)


def project_tokenizer(project: Project):
    d = project.tokenizer_dir
    return load_tokenizer(str(d) if d.is_dir() else project.config.model)


def prepare_inputs(project: Project, events=null_sink) -> RunInputs:
    """The project's encoded splits from its cache; the task files are read and tokenized only when the cache
    is missing or was made with other settings (then it is rebuilt)."""
    key = cache_key(project)
    memo = getattr(project, "_inputs_memo", None)
    if memo is not None and memo[0] == key:
        return memo[1]  # the stages of one `run` share one Project: read the cache once
    task = project.task()
    # under torchrun the main process reads (or rebuilds) the cache first and the others wait, then read it
    cached = read_cache(project) if runtime.is_main() else None
    if runtime.is_main() and cached is None:
        events(
            LogMessage("reading and tokenizing the task data (once per project; cached in cache/inputs.safetensors)")
        )
        build_cache(project, project_tokenizer(project), events=events)
        cached = read_cache(project)
    runtime.barrier()
    if cached is None:
        cached = read_cache(project)
    if cached is None:
        raise InternalError(f"{project.inputs_cache_path}: the input cache just written cannot be read back")
    splits, pad = cached
    device = pick_device(project.config.train.device)
    runtime.setup_device_math(device)
    inputs = RunInputs(project, task, splits["train"], splits["heldout"], splits["dev"], pad, device)
    project._inputs_memo = (key, inputs)
    return inputs


# ---- creating a project -------------------------------------------------------------------------
# what a project makes (everything but the user's own exports): `new --overwrite` removes it all first
GENERATED = (
    "project.json",
    "state.json",
    "task.json",
    "tokenizer",
    "cache",
    "models",
    "checkpoints",
    "results.json",
    "latency.json",
    "importance.safetensors",
    "metrics.jsonl",
    "estimate.json",
    "run",
    "tensorboard",  # the curves of the project being replaced (mlruns/ stays: MLflow keeps attempts to compare)
)


def check_writable_folder(root: Path) -> None:
    """A one-line error when `root` cannot become a project folder: a file, under a file, or not writable."""
    if root.exists() and not root.is_dir():
        raise ProjectError(f"{root}: exists and is not a folder: pick another path")
    up = root
    while not up.exists():
        if up.parent == up:
            break
        up = up.parent
    if up.exists() and not up.is_dir():
        raise ProjectError(f"{root}: {up} is a file, so no folder can be made under it: pick another path")
    if up.exists() and not os.access(up, os.W_OK | os.X_OK):
        raise ProjectError(f"{root}: {up} is not writable: pick a folder you can write to")


def clear_project(root: Path) -> None:
    """Remove what an earlier project in `root` made, so `new --overwrite` starts clean (a live run refuses)."""
    from . import runs

    runs.check_not_running(root, "replace a project while a run holds it")
    for name in GENERATED:
        p = root / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        except OSError as exc:
            raise ProjectError(
                f"{p}: cannot remove the old project's file ({exc.strerror or exc}): remove it yourself "
                "or pick another folder"
            ) from None


def new_project(root: Path, config: ProjectConfig, overwrite: bool = False, events=null_sink) -> Project:
    """Validate the data and the model, then create the folder: tokenizer, task.json, the encoded cache.

    project.json is written last: a folder without it is not a project, so a failure half-way
    leaves nothing that looks usable.
    """
    root = Path(root)
    if (root / "project.json").exists() and not overwrite:
        raise ProjectError(f"{root}: a project already exists here: open it, or pick another folder")
    check_writable_folder(root)
    task = load_task_data(config.data)  # raises DataError on a bad file before anything is written
    if config.data.unlabeled:
        from .augmentation import check_unlabeled

        check_unlabeled(
            config.data
        )  # so is the unlabeled file, and it is read again (and tokenized) by the width stage
    if task.columns is not None:
        if task.columns.guessed:
            events(
                LogMessage(
                    f"{Path(config.data.train or '').name}: guessed {' and '.join(task.columns.guessed)} columns: "
                    f"{task.columns.describe()} (name them with --text-columns / --label-column to change this)"
                )
            )
        # the project records the columns it was made with, so a later load never guesses differently
        config = dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, text_columns=task.columns.text, label_column=task.columns.label),
        )
    model_config = load_model_config(config.model)
    tokenizer = load_tokenizer(config.model)
    vocab = getattr(model_config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) < vocab // 2:
        # transformers builds a tokenizer of the special tokens alone from a tokenizer_config.json without its
        # vocabulary file: every word would be [UNK]
        raise ModelError(
            f"model '{config.model}': its tokenizer has {len(tokenizer)} tokens but the model has {vocab}: "
            "the vocabulary file (vocab.txt, tokenizer.json or vocab.json + merges.txt) is missing: copy the "
            "tokenizer files from where the model came from"
        )
    if overwrite and (root / "project.json").exists():
        clear_project(root)  # the new project starts from nothing of the old one's
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(
            f"{root}: cannot create the project folder ({exc.strerror or exc}): pick a folder you can write to"
        ) from None
    tmp = root / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(root / "tokenizer", ignore_errors=True)
    os.replace(tmp, root / "tokenizer")
    atomic_write_text(root / TASK_FILE, TaskInfo.of(task).to_json())
    staged = Project(root, config, {"stages": {}})
    events(LogMessage(f"tokenizing {len(task.train)} train and {len(task.dev)} dev rows"))
    build_cache(staged, project_tokenizer(staged), task, events)
    return Project.create(root, config, overwrite=True)
