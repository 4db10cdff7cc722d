"""Project configuration: frozen dataclasses, JSON with a schema version, profiles of hyper-parameters."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError

SCHEMA_VERSION = 5

BUILTIN_MINILM = "builtin:minilm"
DEPTH_RULES = ("paper", "keep-last")
# the order of the distilling stages: paper = width first (stage 1), then every width x depth from the width model
# (stage 2); joint = no width stage: the depth stage distils the rewired teacher into every width x depth at once, for
# width_epochs + depth_epochs epochs (the same number of student updates), with the depth stage's loss weights and lr
STAGE_ORDERS = ("paper", "joint")
# measured on SST-2 from one teacher and one width-stage model: dropping the last layers (paper) beat dropping
# layer 0 (keep-last) by 1.58 points over the reduced depths (bench/results/depth_rule.md)
DEFAULT_DEPTH_RULE = "paper"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# where a run's losses, learning rate and dev metrics also go (core.tracking), besides metrics.jsonl
REPORT_TO = ("tensorboard", "mlflow")
STAGES = ("finetune", "rewire", "width", "depth", "finetune-subnets", "int8-aware", "evaluate")
# the model each training stage leaves in models/ (finetune-subnets and int8-aware leave none when skipped)
STAGE_MODEL = {
    "finetune": "teacher",
    "rewire": "rewired",
    "width": "width",
    "depth": "depth",
    "finetune-subnets": "subnets",
    "int8-aware": "int8",  # the weights the INT8 exports quantize (fp32 exports keep the model before it)
}
# the INT8 method the int8-aware stage trains through (quantaware.py emulates it; requests.INT8_METHODS): its
# weights serve the INT8 files of this method only, and a stage that ran with another (before round 8, one range
# per tensor) left weights the exports no longer take
INT8_EMULATION = "per-token"


@dataclass(frozen=True)
class DataConfig:
    """Where the task's data comes from.

    kind: "glue" (a GLUE task by name, from `data_dir` if given, else through `datasets`),
          "files" (a local CSV/TSV/JSONL pair), or "demo" (the built-in synthetic set).
    """

    kind: str = "demo"
    task: str | None = None
    data_dir: str | None = None
    train: str | None = None
    dev: str | None = None
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    # the user's unlabeled in-domain text (data/unlabeled.py): the distilling stages learn the teacher's outputs on it
    unlabeled: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    profile: str = "quick"
    seed: int = 0
    batch_size: int = 32
    eval_batch_size: int = 64
    max_seq_length: int = 128
    max_train_examples: int | None = None
    # importance scoring: "heldout" = a slice of train kept out of training; "dev" = the dev set
    importance_split: str = "heldout"
    importance_examples: int = 2000
    # only the teacher must not see the held-out importance rows: after rewiring they train the width, depth
    # and finetune-subnets stages too (false: they stay out of every stage, as before 0.3)
    reuse_importance_rows: bool = True
    teacher_epochs: float = 3.0
    # null: chosen by a short trial of TEACHER_LR_CANDIDATES scored on the held-out train rows (stages.py)
    teacher_lr: float | None = 2e-5
    width_epochs: float = 3.0
    width_lr: float = 2e-5
    depth_epochs: float = 3.0
    depth_lr: float = 2e-5
    subnet_epochs: float = 0.0  # 0 = skip the optional finetune-subnets stage
    subnet_lr: float = 2e-5
    # 0 = skip the optional int8-aware stage: quantization-aware distillation of every sub-network for INT8 exports
    int8_epochs: float = 0.0
    int8_lr: float = 1e-5
    # augmented copies of each student row (data/augment.py) that the distilling stages also learn the teacher's
    # outputs on: 0 = none; null = the default for the task's size (data.augment.auto_copies: more copies for a
    # smaller task, capped so a CPU run stays bounded). The paper profile sets null, quick sets 0
    augment: int | None = 0
    # linear warm-up over this fraction of each stage's steps; null: the model family's default, which is what
    # the paper's code does (6 % for RoBERTa, none for BERT): see `warmup_for`
    warmup_frac: float | None = None
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # loss = l1 * soft-CE(logits) + l2 * sum of hidden-state MSEs
    width_l1: float = 1.0
    width_l2: float = 0.1
    depth_l1: float = 1.0
    depth_l2: float = 1.0
    width_mults: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    depth_mults: tuple[float, ...] = (1.0, 0.75, 0.5)
    depth_rule: str = DEFAULT_DEPTH_RULE
    stage_order: str = "paper"  # STAGE_ORDERS
    # shapes with their own heads and neurons per layer (search.Space) drawn at random each step of the depth stage
    # and distilled beside the grid's cells (the sandwich rule of BigNAS/OFA: the grid already holds the largest and
    # the smallest), so shapes between the cells that `dynastudio search` explores are trained too. 0 = the cells only
    sandwich: int = 0
    checkpoint_every: int = 200  # optimizer steps between mid-stage checkpoints
    checkpoint_minutes: float = 10.0  # and at least this often by the clock, so slow steps lose little to a kill
    device: str = "auto"
    # auto: bf16 autocast on a CUDA GPU that supports it, fp16 with loss scaling on older GPUs; on a CPU bf16 autocast
    # where it computes bf16 natively (AVX512-BF16, AMX, Arm BF16), fp32 elsewhere
    precision: str = "auto"
    # batches of rows of similar length (less padding); the order stays a function of (seed, epoch)
    group_by_length: bool = True
    # "none", or the trackers that also get the run, comma separated: "tensorboard", "mlflow", "tensorboard,mlflow"
    # (a string, not a list, so that it reads and edits as one box like the other settings)
    report_to: str = "none"


# the teacher learning rates a trial tries when train.teacher_lr is null, the paper's 2e-5 first: each trains a copy
# of the teacher for TEACHER_LR_TRIAL_STEPS steps at most (a tenth of the teacher's steps when fewer) on train rows,
# and the TEACHER_LR_RACE scoring best on the held-out train rows go on to the race (a tie: the lower rate first)
TEACHER_LR_CANDIDATES = (2e-5, 5e-5, 1e-4, 2e-4)
TEACHER_LR_TRIAL_STEPS = 100


def teacher_lr_trial_steps(teacher_steps: int) -> int:
    """The steps each rate of the trial trains: TEACHER_LR_TRIAL_STEPS, or a tenth of the teacher's own when fewer."""
    return max(1, min(TEACHER_LR_TRIAL_STEPS, teacher_steps // 10))


def teacher_lr_trial_longer(steps: int, teacher_steps: int) -> int | None:
    """The steps of the trial's next round when its last round left every rate with the same score (after a few
    dozen steps on CoLA every copy still predicted the majority class: Matthews 0 for all four, and the race was
    then sent the wrong rates): twice `steps`, while that stays within a quarter of the teacher's own steps."""
    longer = 2 * steps
    return longer if longer <= teacher_steps // 4 else None


# the trial's best rates that then each train a whole teacher; race_winner keeps the lower unless the higher is
# clearly better on the held-out rows
TEACHER_LR_RACE = 2


PROFILES: dict[str, dict[str, Any]] = {
    # The defaults of the paper's released code (run_glue.py of DynaBERT).
    "paper": dict(
        batch_size=32,
        max_seq_length=128,
        # the paper's code fine-tunes its teacher for 3 epochs. 5 here: the teacher keeps its best epoch on the
        # held-out rows, so more epochs cost time but not quality, and on STS-B and CoLA every rate's 5-epoch teacher
        # scored higher on those rows than its 3-epoch one (8 of 8; bench/results/teacher_lr_{stsb,cola}.md)
        teacher_epochs=5.0,
        # chosen per model and task: a short trial of TEACHER_LR_CANDIDATES, then a race of whole teachers at the
        # best two, scored on the held-out train rows (stages._teacher_lr). The paper's 2e-5 suits BERT-base; a
        # small model's teacher under-trains at it (issue 26)
        teacher_lr=None,
        width_epochs=3.0,
        width_lr=2e-5,
        depth_epochs=3.0,
        depth_lr=2e-5,
        checkpoint_every=500,
        augment=None,  # the paper's GLUE results distil on augmented rows (TinyBERT's augmentation)
    ),
    # Small enough that the built-in demo runs end to end on 2 CPU cores in a few minutes.
    "quick": dict(
        batch_size=32,
        max_seq_length=64,
        teacher_epochs=3.0,
        teacher_lr=5e-5,
        width_epochs=2.0,
        width_lr=5e-5,
        depth_epochs=2.0,
        depth_lr=5e-5,
        importance_examples=256,
        checkpoint_every=50,
        augment=0,
    ),
}


def profile_config(name: str, **overrides: Any) -> TrainConfig:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile '{name}': choose one of {', '.join(PROFILES)}")
    values = dict(PROFILES[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["profile"] = name
    return validate_train(TrainConfig(**values))


def validate_train(t: TrainConfig) -> TrainConfig:
    def bad(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"train.{field_name}: {why}")

    # types first: a hand-edited project.json may hold 64.5, "32" or null where a number belongs
    whole = ("seed", "batch_size", "eval_batch_size", "max_seq_length", "importance_examples", "checkpoint_every")
    for name in whole:
        v = getattr(t, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(name, f"{v!r} is not a whole number: write one such as {getattr(TrainConfig, name)}")
    if t.max_train_examples is not None and (
        isinstance(t.max_train_examples, bool) or not isinstance(t.max_train_examples, int)
    ):
        raise bad("max_train_examples", f"{t.max_train_examples!r} is not a whole number (or null for all rows)")
    for f in fields(TrainConfig):
        v = getattr(t, f.name)
        if f.type in ("float", float) and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf"))
        ):
            raise bad(f.name, f"{v!r} is not a number: write one such as {f.default}")
    if not 0 <= t.seed < 2**32:
        raise bad("seed", "must be between 0 and 4294967295")
    if not t.checkpoint_minutes > 0:
        raise bad("checkpoint_minutes", "must be more than 0, e.g. 10")
    if t.checkpoint_every < 1 or t.eval_batch_size < 1 or t.importance_examples < 0:
        raise bad(
            "checkpoint_every"
            if t.checkpoint_every < 1
            else "eval_batch_size"
            if t.eval_batch_size < 1
            else "importance_examples",
            "must be at least 1 (importance_examples: 0 or more)",
        )
    if t.batch_size < 1:
        raise bad("batch_size", "must be at least 1")
    if not 8 <= t.max_seq_length <= 4096:
        raise bad("max_seq_length", "must be between 8 and 4096")
    lr = t.teacher_lr
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr != lr):
        raise bad("teacher_lr", f"{lr!r} is not a number: write one such as 2e-5, or null to let a short trial choose")
    for name in ("teacher_lr", "width_lr", "depth_lr", "subnet_lr", "int8_lr"):
        v = getattr(t, name)
        if v is not None and not 0 < v < 1:
            raise bad(name, "must be a small positive number such as 2e-5")
    n = t.augment
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100):
        raise bad("augment", f"{n!r} must be a whole number of copies from 0 to 100, or null for the task's default")
    for name in ("teacher_epochs", "width_epochs", "depth_epochs", "subnet_epochs", "int8_epochs"):
        if getattr(t, name) < 0:
            raise bad(name, "must be 0 or more")
    for name, mults in (("width_mults", t.width_mults), ("depth_mults", t.depth_mults)):
        if not mults or any(not 0 < m <= 1 for m in mults):
            raise bad(name, "each multiplier must be in (0, 1], e.g. 1.0,0.75,0.5")
        if 1.0 not in mults:
            raise bad(name, "must include 1.0 (the full model is always trained)")
    k = t.sandwich
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 16:
        raise bad("sandwich", f"{k!r} must be a whole number of sampled shapes per step from 0 to 16")
    if t.depth_rule not in DEPTH_RULES:
        raise bad("depth_rule", f"must be one of {', '.join(DEPTH_RULES)}")
    if t.stage_order not in STAGE_ORDERS:
        raise bad("stage_order", f"{t.stage_order!r} must be one of {', '.join(STAGE_ORDERS)}")
    if t.importance_split not in ("heldout", "dev"):
        raise bad("importance_split", "must be 'heldout' or 'dev'")
    if t.max_train_examples is not None and t.max_train_examples < 1:
        raise bad("max_train_examples", "must be at least 1")
    if t.precision not in PRECISIONS:
        raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")
    if not isinstance(t.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", t.device):
        raise bad("device", f"{t.device!r} is not a device: write auto, cpu, cuda, or one GPU as cuda:0, cuda:1...")
    if not isinstance(t.group_by_length, bool):
        raise bad("group_by_length", "must be true or false")
    if not isinstance(t.reuse_importance_rows, bool):
        raise bad("reuse_importance_rows", "must be true or false")
    if not isinstance(t.report_to, str):
        raise bad("report_to", f"{t.report_to!r} must be a string: none, or {', '.join(REPORT_TO)} (comma separated)")
    report_to = ",".join(report_targets(t.report_to)) or "none"  # raises on an unknown name
    if report_to != t.report_to:
        t = replace(t, report_to=report_to)  # one spelling on disk: "tensorboard,mlflow", never " MLflow, tensorboard"
    w = t.warmup_frac
    if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < 1):
        raise bad(
            "warmup_frac",
            f"{w!r} must be a fraction of the steps in [0, 1), such as 0.06, or null for the model family's default",
        )
    return t


def report_targets(report_to: str) -> tuple[str, ...]:
    """The trackers a `report_to` setting names, in REPORT_TO's order; () for "none" or "". Raises ConfigError on an
    unknown name (checked in validate_train, so a project.json never holds one)."""
    names = {n.strip().lower() for n in report_to.split(",")} - {""}
    unknown = sorted(names - set(REPORT_TO) - {"none"})
    if unknown:
        raise ConfigError(
            f"train.report_to: unknown tracker '{unknown[0]}': write none, or one or more of "
            f"{', '.join(REPORT_TO)}, comma separated"
        )
    if "none" in names and len(names) > 1:
        raise ConfigError("train.report_to: 'none' goes alone: drop it, or drop the trackers")
    return tuple(n for n in REPORT_TO if n in names)


# the model families the paper's code warms up (run_glue.py: 6 % of the steps for RoBERTa, none for BERT)
WARMUP_BY_MODEL_TYPE = {"roberta": 0.06, "xlm-roberta": 0.06}


def warmup_for(t: TrainConfig, model_type: str | None) -> float:
    """The warm-up fraction a stage uses: the setting, or the model family's default when it is null."""
    if t.warmup_frac is not None:
        return float(t.warmup_frac)
    return WARMUP_BY_MODEL_TYPE.get(model_type or "", 0.0)


@dataclass(frozen=True)
class ProjectConfig:
    model: str = BUILTIN_MINILM
    model_is_finetuned: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "project"
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str, source: str = "project.json") -> ProjectConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}: not valid JSON (line {exc.lineno}): restore it or create the project again"
            ) from None
        except RecursionError:
            raise ConfigError(
                f"{source}: nested too deeply to be a project file: restore it or create the project again"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source}: holds a JSON {_json_kind(raw)}, not an object of settings: restore it or "
                "create the project again"
            )
        return ProjectConfig.from_dict(migrate(raw, source), source)

    @staticmethod
    def from_dict(raw: dict, source: str = "project.json") -> ProjectConfig:
        for part in ("data", "train"):
            if not isinstance(raw.get(part, {}), dict):
                raise ConfigError(
                    f"{source}: '{part}' is a JSON {_json_kind(raw[part])}, not an object of settings: "
                    "restore it or create the project again"
                )
        try:
            data = _build(DataConfig, raw.get("data", {}), f"{source}: data")
            train = validate_train(_build(TrainConfig, raw.get("train", {}), f"{source}: train"))
            top = {k: v for k, v in raw.items() if k not in ("data", "train")}
            return _build(ProjectConfig, {**top, "data": data, "train": train}, source)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from None

    def with_train(self, **changes: Any) -> ProjectConfig:
        return replace(self, train=validate_train(replace(self.train, **changes)))


def _json_kind(v) -> str:
    return {list: "list", str: "string", type(None): "null", bool: "true/false", int: "number", float: "number"}.get(
        type(v), type(v).__name__
    )


def _build(cls, values: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}: remove them")
    out = {}
    for k, v in values.items():
        if isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return cls(**out)


def migrate(raw: dict, source: str = "project.json") -> dict:
    """Bring an older project.json up to SCHEMA_VERSION.

    Each schema step is one `if version == N:` block, so old projects keep opening.
    """
    version = raw.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ConfigError(f"{source}: missing or invalid schema_version: this is not a DynaBERT Studio project file")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: schema_version {version} is newer than this DynaBERT Studio understands "
            f"({SCHEMA_VERSION}): upgrade dynabert-studio"
        )
    if version == 1:
        # 2 added length-grouped batches, on by default for new projects. A project made before keeps its
        # random batches: a stage it stopped half-way resumes with exactly the batches it would have seen.
        raw = {**raw, "train": {"group_by_length": False, **raw.get("train", {})}, "schema_version": 2}
        version = 2
    if version == 2:
        # 3 added train.report_to (TensorBoard / MLflow), "none" by default: nothing to change. The number moves so
        # that an older release opening a newer project asks to be upgraded instead of naming report_to unknown.
        raw = {**raw, "schema_version": 3}
        version = 3
    if version == 3:
        # 4 added train.augment (0 when absent: an older project keeps its rows, so a stopped stage resumes) and
        # train.stage_order ("paper" when absent, the only order before)
        raw = {**raw, "schema_version": 4}
        version = 4
    if version == 4:
        # 5 added train.sandwich (0 when absent: the depth stage trains the grid's cells only, as before)
        raw = {**raw, "schema_version": 5}
    return raw
