"""Test helpers shared by the test files (imported as `helpers`): tiny random BERT/RoBERTa models and a
tiny learnable text task built here, project configs over them, and test jobs for the studio."""

from __future__ import annotations

import random
from pathlib import Path

import torch

GOOD = ["good", "great", "fine", "lovely", "superb", "nice"]
BAD = ["bad", "awful", "poor", "dull", "boring", "ugly"]
FILLER = ["the", "a", "film", "movie", "plot", "was", "very", "quite", "and", "it", "story", "acting"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label is whether a GOOD or BAD word appears: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in rows), encoding="utf-8")
    return path


def tiny_config(kind: str = "bert", **overrides):
    from transformers import BertConfig, RobertaConfig

    vocab = len(SPECIAL) + len(GOOD) + len(BAD) + len(FILLER)
    base = dict(
        vocab_size=vocab + (4 if kind == "roberta" else 0),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=72,
        num_labels=2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    base.update(overrides)
    if kind == "roberta":
        return RobertaConfig(pad_token_id=1, **base)
    return BertConfig(**base)


def tiny_model(kind: str = "bert", seed: int = 0, **overrides):
    from transformers import BertForSequenceClassification, RobertaForSequenceClassification

    torch.manual_seed(seed)
    cls = RobertaForSequenceClassification if kind == "roberta" else BertForSequenceClassification
    return cls(tiny_config(kind, **overrides)).eval()


def make_tiny_model_dir(root: Path, layers: int = 4, **overrides) -> Path:
    """A local model folder (config, safetensors weights, WordPiece tokenizer) like a hub download."""
    from transformers import BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(SPECIAL + GOOD + BAD + FILLER) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(root))  # reads vocab.txt (v5 takes no vocab_file=)
    tok.save_pretrained(str(root))
    model = tiny_model(num_hidden_layers=layers, **overrides)
    model.save_pretrained(str(root))
    return root


def exportable_project(root: Path, train: Path, dev: Path):
    """A project whose fine-tuned model is a tiny random BERT, marked done: ready to export without training."""
    from dynastudio.core.prepare import new_project

    model_dir = make_tiny_model_dir(root / "model")
    cfg = tiny_project_config(model_dir, train, dev, width_mults=(1.0, 0.5), depth_mults=(1.0, 0.5))
    p = new_project(root / "proj", cfg)
    p.save_model("teacher", tiny_model(seed=11))
    p.mark_done("finetune", {})
    return p


def tiny_project_config(model_dir: Path, train: Path, dev: Path, **train_overrides):
    from dynastudio.core.config import DataConfig, ProjectConfig, profile_config

    t = dict(
        batch_size=16,
        eval_batch_size=32,
        max_seq_length=32,
        teacher_epochs=8,
        teacher_lr=2e-3,
        width_epochs=1,
        width_lr=5e-4,
        depth_epochs=1,
        depth_lr=5e-4,
        importance_examples=32,
        checkpoint_every=4,
    )
    t.update(train_overrides)
    return ProjectConfig(
        model=str(model_dir),
        data=DataConfig(kind="files", train=str(train), dev=str(dev), text_columns=("sentence",), label_column="label"),
        train=profile_config("quick", **t),
        name="tiny",
    )


def stopping_at(stage: str, step: int):
    """(stop token, event log, sink): the sink records every event and sets the token once `stage` ends `step`."""
    from dynastudio.core.events import EventLog, StepEnded, StopToken

    stop, seen = StopToken(), EventLog()

    def sink(event) -> None:
        seen(event)
        if isinstance(event, StepEnded) and event.stage == stage and event.step == step:
            stop.set()

    return stop, seen, sink


def register_test_job(monkeypatch, name: str, fn: str, trains: bool = False, request_type: str = "StageRequest"):
    """Put a job of tests/studio_jobs.py (`fn`, its function's name) into the registry, here and in the job
    child processes the studio starts, for this test."""
    import os

    from dynastudio.core import registry, requests

    job = registry.Job(
        name,
        f"studio_jobs:{fn}",
        getattr(requests, request_type),
        f"test job {name}",
        trains=trains,
        opens_project=False,
    )
    monkeypatch.setitem(registry.JOBS, name, job)
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("DYNASTUDIO_JOB_MODULES", "studio_jobs")
    specs = [s for s in os.environ.get("DYNASTUDIO_TEST_JOBS", "").split(",") if s]
    monkeypatch.setenv("DYNASTUDIO_TEST_JOBS", ",".join(specs + [f"{name}:{fn}:{request_type}:{int(trains)}"]))
    return job
