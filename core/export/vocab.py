"""Vocabulary trimming at export: keep the tokens a task's texts use, remap the tokenizer and the embedding rows.

A small sub-network is mostly its word-embedding table (MiniLM at width 0.25, depth 0.5: 11.9M of its
13.4M parameters). A deployed classifier only meets the kind of text it was trained for, so the rows of
tokens that never occur in the task's train and dev texts can go. The kept ids stay in their original
order, so the special tokens (ids 0-3 in RoBERTa, 0 and 100-103 in BERT) keep their relative order and
the padding id is remapped like every other.

The new ids put the frequent tokens first: the special tokens, the word list's tokens and the tokens
seen more than RARE_MAX times in the train texts; then the rare ones (seen RARE_MAX times or less, or
only in dev). The INT8 export stores the frequent rows at 8 bits and the rare rows at 4 bits
(`quantize.compact_lookup_tables`): rare tokens seldom decide a prediction, and on SST-2 a third of the
kept tokens are rare.

Works on fast tokenizers' `tokenizer.json` (what transformers 5 saves): WordPiece (BERT) drops the
unused entries; byte-level BPE (RoBERTa) keeps, besides the used tokens, every token their merges pass
through and the 256 byte symbols, so any text still encodes, and the merges whose parts are all kept.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, UserError

RARE_MAX = 5  # a token seen this many times or fewer in the train texts is rare


@dataclass
class VocabTrim:
    kept: np.ndarray  # the kept old ids: new id i is old id kept[i]; frequent ones first, each part ascending
    old_vocab_size: int
    frequent: int = -1  # new ids below this are frequent (-1: all)

    def __post_init__(self):
        if self.frequent < 0:
            self.frequent = len(self.kept)

    @property
    def old_to_new(self) -> np.ndarray:
        """old id -> new id; -1 for a dropped token."""
        m = np.full(self.old_vocab_size, -1, dtype=np.int64)
        m[self.kept] = np.arange(len(self.kept))
        return m

    def remap_ids(self, ids: np.ndarray, unk_new: int) -> np.ndarray:
        """Map old ids to new ones; dropped tokens become the unknown token."""
        out = self.old_to_new[ids]
        return np.where(out < 0, unk_new, out)


def read_word_list(path: str | Path) -> list[str]:
    """One word or phrase per line; blank lines and lines starting with # are skipped."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{p}: word list not found: pass a text file with one word per line") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text (byte {exc.start}): save the word list as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read the word list ({exc.strerror})") from None
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def token_counts(tokenizer, texts_a: Sequence[str], texts_b: Sequence[str] | None = None, chunk: int = 4096) -> Counter:
    """How often the tokenizer produces each token id for these texts (whole texts: no truncation)."""
    seen: Counter = Counter()
    for start in range(0, len(texts_a), chunk):
        a = list(texts_a[start : start + chunk])
        b = None if texts_b is None else list(texts_b[start : start + chunk])
        out = tokenizer(
            a,
            b,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        for ids in out["input_ids"]:
            seen.update(ids)
    return seen


def used_ids(tokenizer, texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> set[int]:
    return set(token_counts(tokenizer, texts_a, texts_b))


def word_ids(tokenizer, words: Iterable[str]) -> set[int]:
    """The ids of a word list, as the words appear mid-sentence and at its start (BPE marks a leading space)."""
    words = list(words)
    if not words:
        return set()
    seen = used_ids(tokenizer, words)
    seen |= used_ids(tokenizer, [f"a {w}" for w in words])
    return seen


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise UserError("vocabulary trimming needs a fast tokenizer (tokenizer.json): this model's tokenizer has none")
    return json.loads(backend.to_str())


def _bpe_closure(model: dict, kept_tokens: set[str]) -> set[str]:
    """The kept tokens plus every token their merges are built from (recursively)."""
    made_of: dict[str, tuple[str, str]] = {}
    for m in model.get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        made_of.setdefault(a + b, (a, b))
    out = set()
    todo = list(kept_tokens)
    while todo:
        t = todo.pop()
        if t in out:
            continue
        out.add(t)
        if t in made_of:
            todo.extend(made_of[t])
    return out


def plan_trim(
    tokenizer,
    vocab_size: int,
    train: tuple[Sequence[str], Sequence[str] | None],
    others: Sequence[tuple[Sequence[str], Sequence[str] | None]] = (),
    extra_words: Sequence[str] = (),
) -> VocabTrim:
    """Which ids to keep: the train and other texts' tokens, the special tokens, the word list's tokens (and
    for BPE the tokens those are merged from, and the byte symbols); and which of them are frequent."""
    seen: set[int] = set()
    for a, b in others:
        seen |= used_ids(tokenizer, a, b)
    return _trim(tokenizer, vocab_size, token_counts(tokenizer, *train), seen, _always_kept(tokenizer, extra_words))


@dataclass
class VocabPlan:
    """What an export with vocabulary trimming keeps, and the trim its held-out check is built from."""

    trim: VocabTrim  # what the export keeps: the train and dev texts' tokens, specials, the word list
    heldout: VocabTrim  # the same from the train texts only: the dev rows are then new text
    words: int  # entries of the user's word list


def plan_vocab(tokenizer, vocab_size: int, task, words: Sequence[str] = ()) -> VocabPlan:
    """The export's trim and the held-out one for a task's rows (a TaskData), each split tokenized once."""
    counts = token_counts(tokenizer, task.train.text_a, task.train.text_b)
    dev = used_ids(tokenizer, task.dev.text_a, task.dev.text_b)
    always = _always_kept(tokenizer, words)
    return VocabPlan(
        _trim(tokenizer, vocab_size, counts, dev, always),
        _trim(tokenizer, vocab_size, counts, set(), always),
        len(words),
    )


def _always_kept(tokenizer, words: Iterable[str]) -> set[int]:
    """The special tokens and the word list's tokens: kept, and counted as frequent, whatever the texts say."""
    return {i for i in (tokenizer.all_special_ids or []) if i is not None} | word_ids(tokenizer, words)


def _trim(tokenizer, vocab_size: int, counts: Counter, seen: set[int], always: set[int]) -> VocabTrim:
    """The trim from the train texts' token counts, the other texts' ids and the always-kept ids."""
    keep: set[int] = set(counts) | seen | always
    spec = _tokenizer_json(tokenizer)
    model = spec["model"]
    if model["type"] == "BPE":
        vocab = model["vocab"]
        id_to_tok = {i: t for t, i in vocab.items()}
        tokens = {id_to_tok[i] for i in keep if i in id_to_tok}
        tokens = _bpe_closure(model, tokens)
        # the byte-level alphabet: every text stays encodable, unseen words fall back to bytes
        tokens |= {t for t in vocab if len(t) == 1}
        keep |= {vocab[t] for t in tokens if t in vocab}
    elif model["type"] != "WordPiece":
        raise UserError(
            f"vocabulary trimming supports WordPiece (BERT) and BPE (RoBERTa) tokenizers, not {model['type']}: "
            "export without --trim-vocab"
        )
    keep |= {a["id"] for a in spec.get("added_tokens", [])}
    keep = {i for i in keep if 0 <= i < vocab_size}
    if not keep:
        raise DataError("vocabulary trimming found no tokens in the task's texts: check the data")
    frequent = sorted(i for i in keep if i in always or counts.get(i, 0) > RARE_MAX)
    rare = sorted(keep.difference(frequent))
    return VocabTrim(np.array(frequent + rare, dtype=np.int64), vocab_size, len(frequent))


def _remap_post_processor(pp: dict | None, old_to_new: np.ndarray) -> None:
    if not pp:
        return
    kind = pp.get("type")
    if kind == "Sequence":
        for p in pp.get("processors", []):
            _remap_post_processor(p, old_to_new)
    elif kind == "TemplateProcessing":
        for tok in pp.get("special_tokens", {}).values():
            tok["ids"] = [int(old_to_new[i]) for i in tok["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            name, i = pp[key]
            pp[key] = [name, int(old_to_new[i])]


def trimmed_tokenizer_json(tokenizer, trim: VocabTrim) -> dict:
    """tokenizer.json with only the kept tokens, ids renumbered 0..n-1 in their old order."""
    spec = copy.deepcopy(_tokenizer_json(tokenizer))
    o2n = trim.old_to_new
    model = spec["model"]
    vocab = model["vocab"]
    kept = {t: int(o2n[i]) for t, i in vocab.items() if 0 <= i < len(o2n) and o2n[i] >= 0}
    model["vocab"] = dict(sorted(kept.items(), key=lambda kv: kv[1]))
    if model["type"] == "BPE":
        kept = model["vocab"]
        merges = []
        for m in model.get("merges", []):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in kept and b in kept and a + b in kept:
                merges.append(m)
        model["merges"] = merges
    for a in spec.get("added_tokens", []):
        a["id"] = int(o2n[a["id"]])
    _remap_post_processor(spec.get("post_processor"), o2n)
    return spec


def save_trimmed_tokenizer(tokenizer, trim: VocabTrim, folder: Path):
    """Save the tokenizer trimmed to `trim` into `folder` (tokenizer.json and the slow files' equivalents
    rewritten) and return it loaded back with AutoTokenizer."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    spec = trimmed_tokenizer_json(tokenizer, trim)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    vocab = spec["model"]["vocab"]
    by_id = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if (folder / "vocab.txt").exists():  # WordPiece's slow file: one token per line, line number = id
        (folder / "vocab.txt").write_text("".join(t + "\n" for t in by_id), encoding="utf-8")
    if (folder / "vocab.json").exists():
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    if (folder / "merges.txt").exists():
        merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(folder))


def trim_model(slim, trim: VocabTrim):
    """A copy of the extracted model whose word-embedding table holds the kept rows only."""
    import torch

    model = copy.deepcopy(slim)
    emb = model.embeddings.word_embeddings
    rows = emb.weight.detach()[torch.from_numpy(trim.kept)].clone()
    new = torch.nn.Embedding(rows.shape[0], rows.shape[1], dtype=rows.dtype)
    new.weight.data.copy_(rows)
    model.embeddings.word_embeddings = new
    model.config.vocab_size = int(rows.shape[0])
    pad = model.config.pad_token_id
    if pad is not None:
        new_pad = int(trim.old_to_new[pad]) if pad < trim.old_vocab_size else -1
        if new_pad < 0:
            raise UserError("vocabulary trimming dropped the padding token: this is a bug, please report it")
        model.config.pad_token_id = new_pad
        model.embeddings.pad_token_id = new_pad
    # the INT8 export stores rows from `vocab_rare_from` on at 4 bits
    model.config.source = {
        **(model.config.source or {}),
        "vocab_trimmed_from": trim.old_vocab_size,
        "vocab_rare_from": int(trim.frequent),
    }
    return model
