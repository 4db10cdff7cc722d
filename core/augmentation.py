"""The rows the distilling stages learn from beyond the labelled ones: augmented copies of the training rows
(data/augment.py), made once per project and cached in cache/augment.safetensors.

Made by the first stage that needs them (width), in parts of PART_ROWS rows written as they finish, so a cancelled
or killed build resumes where it was; the finished rows are tokenized once and the parts removed. Under torchrun the
main process makes them and the others read the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import runtime
from .data.augment import AUGMENT_CANDIDATES, AUGMENT_PROB, NO_LABEL, Augmenter, auto_copies, load_masked_lm
from .data.encoding import Encoded, encode
from .data.glue import GLUE_TASKS, glue_name
from .data.tables import TextTable
from .data.task import load_task_data
from .data.unlabeled import read_unlabeled
from .errors import Cancelled, InternalError
from .events import LogMessage, StopToken
from .models import quiet_transformers, resolve_model
from .prepare import RunInputs, cache_key, split_rows
from .store import atomic_write_text
from .tensorfiles import atomic_save_tensors, load_tensors

VERSION = 1
PART_ROWS = 500  # source rows per part file: what a cancelled build loses at most


@dataclass(frozen=True)
class AugmentInfo:
    """What the report says of a project's augmentation."""

    copies: int  # per row, as set or as the default chose
    source_rows: int  # the labelled rows that were copied
    rows: int  # the augmented rows made (copies identical to their row are left out)
    source: str  # where the replacements come from (Augmenter.source)
    seconds: float  # what making them cost (0 when read from the cache)


def copies_for(inputs: RunInputs) -> int:
    """The copies per row the project asks for: train.augment, or the default for its number of training rows."""
    n = inputs.cfg.train.augment
    return auto_copies(len(inputs.student_rows)) if n is None else int(n)


def _path(inputs: RunInputs) -> Path:
    return inputs.project.root / "cache" / "augment.safetensors"


def _key(inputs: RunInputs, copies: int) -> str:
    cfg = inputs.cfg
    key = {
        "version": VERSION,
        "inputs": cache_key(inputs.project),
        "copies": copies,
        "prob": AUGMENT_PROB,
        "candidates": AUGMENT_CANDIDATES,
        "model": cfg.model,
        "reuse_importance_rows": cfg.train.reuse_importance_rows,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _source_table(inputs: RunInputs) -> TextTable:
    """The student rows as text, in the order of `inputs.student_rows` (the training rows, then the held-out rows
    when the stages after rewiring train on them)."""
    tables = split_rows(load_task_data(inputs.cfg.data), inputs.cfg.train)
    table = tables["train"]
    if len(inputs.student_rows) != len(table):
        held = tables["heldout"]
        table = TextTable(
            table.text_a + held.text_a,
            None if table.text_b is None else table.text_b + (held.text_b or []),
            table.labels + held.labels,
            table.source,
        )
    if len(table) != len(inputs.student_rows):
        raise InternalError(
            f"the task's rows read again ({len(table)}) are not the encoded student rows ({len(inputs.student_rows)})"
        )
    return table


def _read(path: Path, key: str, is_regression: bool, name: str = "augment") -> tuple[Encoded, dict] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # a torn file is made again
        return None
    if meta.get("key") != key:
        return None
    from .prepare import _unpack

    enc = _unpack(load_tensors(path, f"the {name} rows"), name, is_regression)
    return enc, json.loads(meta["info"])


def _load_augmenter(inputs: RunInputs) -> Augmenter:
    from transformers import AutoModel

    quiet_transformers()
    path = resolve_model(inputs.cfg.model)
    mlm = load_masked_lm(path)
    model = mlm if mlm is not None else AutoModel.from_pretrained(path)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight.detach().float().clone()
    if mlm is not None:
        mlm = mlm.to(inputs.device)  # one forward per one-piece word: the GPU when there is one
    return Augmenter(inputs.tokenizer, emb, mlm, inputs.cfg.train.max_seq_length)


def _build(inputs: RunInputs, copies: int, key: str, events, stop: StopToken | None) -> None:
    t0 = time.perf_counter()
    table = _source_table(inputs)
    parts = _path(inputs).parent / f"augment-{key}"
    for old in _path(inputs).parent.glob("augment-*"):
        if old != parts:
            shutil.rmtree(old, ignore_errors=True)  # a build of other settings: never resumed
    parts.mkdir(parents=True, exist_ok=True)
    spent = float((parts / "seconds").read_text()) if (parts / "seconds").is_file() else 0.0
    augmenter = _load_augmenter(inputs)
    events(LogMessage(f"augmenting {len(table):,} rows x {copies} copies: {augmenter.source}"))
    augmenter.learn_words(table)
    n_parts = math.ceil(len(table) / PART_ROWS)
    for p in range(n_parts):
        f = parts / f"part-{p:05d}.json"
        if f.is_file():
            continue  # made before a cancel or a kill
        if stop is not None and stop.is_set() and runtime.world() == 1:
            # under torchrun only the main process builds while the others wait, so a stop there is taken at the
            # stage's first step, once the rows are made (a collective check here would wait for them forever)
            raise Cancelled("stopped by request")
        lo, hi = p * PART_ROWS, min(len(table), (p + 1) * PART_ROWS)
        out = augmenter.copies(table.select(range(lo, hi)), lo, copies, inputs.cfg.train.seed)
        atomic_write_text(f, json.dumps({"a": out.text_a, "b": out.text_b}))
        atomic_write_text(parts / "seconds", str(spent + time.perf_counter() - t0))
        events(LogMessage(f"augmenting: {hi:,} of {len(table):,} rows done"))
    a: list[str] = []
    b: list[str] | None = None if table.text_b is None else []
    for p in range(n_parts):
        d = json.loads((parts / f"part-{p:05d}.json").read_text())
        a += d["a"]
        if b is not None:
            b += d["b"]
    made = TextTable(a, b, [NO_LABEL] * len(a), "augmented")
    enc = encode(made, inputs.tokenizer, inputs.cfg.train.max_seq_length)
    enc = _unlabeled(enc, inputs.task.is_regression)
    info = AugmentInfo(copies, len(table), len(enc), augmenter.source, spent + time.perf_counter() - t0)
    from .prepare import _pack

    meta = {"key": key, "info": json.dumps(info.__dict__)}
    atomic_save_tensors(_path(inputs), _pack(enc, "augment"), meta)
    shutil.rmtree(parts, ignore_errors=True)


def _unlabeled(enc: Encoded, is_regression: bool) -> Encoded:
    """`enc` with the rows' labels marked absent: NaN for a regression task (a loss reading it turns NaN), NO_LABEL
    for a classification task (a loss reading it fails on the index)."""
    mark = float("nan") if is_regression else NO_LABEL
    return Encoded(enc.input_ids, enc.token_type_ids, [mark] * len(enc), is_regression)


def augmented_rows(inputs: RunInputs, events, stop: StopToken | None = None) -> tuple[Encoded, AugmentInfo] | None:
    """The project's augmented rows and what made them, made now if the cache lacks them; None when augmentation
    is off (train.augment 0, or the default for a large task)."""
    copies = copies_for(inputs)
    if copies <= 0:
        return None
    key = _key(inputs, copies)
    path = _path(inputs)
    got = _read(path, key, inputs.task.is_regression) if runtime.is_main() else None
    if runtime.is_main() and got is None:
        _build(inputs, copies, key, events, stop)
        got = _read(path, key, inputs.task.is_regression)
        if got is None:
            raise InternalError(f"{path}: the augmented rows just written cannot be read back")
    runtime.barrier()
    if got is None:
        got = _read(path, key, inputs.task.is_regression)
    if got is None:
        raise InternalError(f"{path}: the augmented rows cannot be read")
    enc, info = got
    return enc, AugmentInfo(**info)


def task_text_columns(data) -> tuple[str, ...]:
    """The names of the task's text columns, which an unlabeled file's columns are matched by."""
    if data.kind == "glue":
        return tuple(GLUE_TASKS[glue_name(data.task)].hf_columns)
    if data.kind == "demo":
        return ("sentence",)
    return tuple(data.text_columns)


def check_unlabeled(data) -> int:
    """Read and check the unlabeled file `data` names now (a one-line DataError if it is bad); its number of rows."""
    cols = task_text_columns(data)
    return len(read_unlabeled(data.unlabeled, len(cols) == 2, cols))


def unlabeled_rows(inputs: RunInputs, events) -> tuple[Encoded, dict] | None:
    """The project's unlabeled file, tokenized (cached in cache/unlabeled.safetensors until the file changes)."""
    name = inputs.cfg.data.unlabeled
    if not name:
        return None
    path = Path(name)
    st = path.stat() if path.is_file() else None
    key = json.dumps(
        [VERSION, cache_key(inputs.project), str(path), st and st.st_size, st and st.st_mtime_ns], default=str
    )
    key = hashlib.sha256(key.encode()).hexdigest()[:24]
    cache = inputs.project.root / "cache" / "unlabeled.safetensors"
    got = _read(cache, key, inputs.task.is_regression, "unlabeled") if runtime.is_main() else None
    if runtime.is_main() and got is None:
        cols = task_text_columns(inputs.cfg.data)
        table = read_unlabeled(path, len(cols) == 2, cols)
        events(LogMessage(f"{path}: tokenizing {len(table):,} unlabeled rows"))
        enc = _unlabeled(encode(table, inputs.tokenizer, inputs.cfg.train.max_seq_length), inputs.task.is_regression)
        from .prepare import _pack

        info = {"file": str(path), "rows": len(enc)}
        atomic_save_tensors(cache, _pack(enc, "unlabeled"), {"key": key, "info": json.dumps(info)})
        got = _read(cache, key, inputs.task.is_regression, "unlabeled")
    runtime.barrier()
    if got is None:
        got = _read(cache, key, inputs.task.is_regression, "unlabeled")
    if got is None:
        raise InternalError(f"{cache}: the unlabeled rows cannot be read back")
    return got


def planned_distill_rows(inputs: RunInputs) -> Encoded:
    """The rows the distilling stages will train on, for an estimate made before they exist: the augmented rows
    when they are made, else the student rows repeated once per copy (the same lengths; copies identical to their
    row, which are left out, make this a little more); the unlabeled rows (tokenized now if need be)."""
    rows = inputs.student_rows
    copies = copies_for(inputs)
    if copies > 0:
        made = _read(_path(inputs), _key(inputs, copies), inputs.task.is_regression)
        if made is not None:
            rows = rows.joined(made[0])
        else:
            for _ in range(copies):
                rows = rows.joined(inputs.student_rows)
    more = unlabeled_rows(inputs, lambda e: None)
    return rows if more is None else rows.joined(more[0])


def distill_rows(inputs: RunInputs, events, stop: StopToken | None = None) -> tuple[Encoded, dict | None]:
    """What the distilling stages (width, depth, int8-aware) train on: the student rows, then the augmented rows,
    then the user's unlabeled rows. Also the facts for the stage's record (None with neither)."""
    rows, facts = inputs.student_rows, {}
    got = augmented_rows(inputs, events, stop)
    if got is not None:
        rows = rows.joined(got[0])
        facts.update(got[1].__dict__)
    more = unlabeled_rows(inputs, events)
    if more is not None:
        rows = rows.joined(more[0])
        facts["unlabeled"] = more[1]
    return rows, facts or None
