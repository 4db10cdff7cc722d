"""Which encoders the engine can slice: checked from a model's config alone (light: the studio checks a folder with it)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from .errors import ModelError

# model_type -> the head layout we know how to drive. RoBERTa-style encoders share BERT's layer layout.
SUPPORTED_MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}


def check_supported(config) -> str:
    """Return the head layout ("bert"/"roberta") or raise a ModelError naming what is supported."""
    kind = SUPPORTED_MODEL_TYPES.get(str(getattr(config, "model_type", "")))
    if kind is None:
        raise ModelError(
            f"model type '{getattr(config, 'model_type', '?')}' is not supported: use a BERT or RoBERTa "
            f"encoder ({', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )
    pet = getattr(config, "position_embedding_type", "absolute") or "absolute"
    if pet != "absolute":
        raise ModelError(f"position_embedding_type '{pet}' is not supported: only absolute position embeddings are")
    if getattr(config, "is_decoder", False):
        raise ModelError("decoder configurations are not supported: use an encoder-only BERT/RoBERTa model")
    if config.hidden_size % config.num_attention_heads:
        raise ModelError("hidden_size must be divisible by num_attention_heads")
    return kind


def check_model_folder(folder: Path) -> str:
    """Check a local model folder's config.json without loading transformers; the head layout, or a ModelError."""
    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{folder}: no config.json here: pick the folder a transformers model was saved to") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a readable model config ({exc}): pick a folder saved by transformers") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: not a model config (a JSON object is expected): pick a folder saved by transformers")
    if raw.get("model_type") not in SUPPORTED_MODEL_TYPES:
        check_supported(SimpleNamespace(**raw))  # says which model types are supported
    if not all(isinstance(raw.get(k), int) for k in ("hidden_size", "num_attention_heads")):
        raise ModelError(f"{path}: hidden_size and num_attention_heads are missing: not a BERT-family config")
    return check_supported(SimpleNamespace(**raw))
