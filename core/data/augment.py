"""Data augmentation as DynaBERT's GLUE runs did it (TinyBERT's `data_augmentation.py`), made from the model itself.

Each training row gets `copies` variants in which every word is replaced, with probability AUGMENT_PROB, by one of
its AUGMENT_CANDIDATES candidates:

- a word that is one piece, when the checkpoint has a masked-LM head: the head's top predictions for that position
  with the word masked (in its sentence), as TinyBERT does with BERT's MLM;
- any other word (several pieces, or every word when the checkpoint has no MLM head, as the built-in MiniLM): its
  nearest neighbours by cosine in the model's own input-embedding space (a word of several pieces is the mean of
  their vectors). TinyBERT uses GloVe for these; GloVe cannot be downloaded here, and the model's own space needs
  nothing more.

A sentence pair is augmented side by side. The rows carry no label (NO_LABEL): the stages that distil learn the
teacher's outputs on them, and nothing else may read them. Each row's copies come from its own seeded generator, so
the result does not depend on how the work is split into chunks (a resumed build makes the same rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InternalError
from .tables import TextTable

AUGMENT_PROB = 0.4  # TinyBERT's threshold p
AUGMENT_CANDIDATES = 15  # TinyBERT's M: candidates kept per word
AUGMENT_MAX_COPIES = 20  # the default never makes more copies per row than this
# the default's cap on augmented rows, so a CPU run stays bounded: copies = min(AUGMENT_MAX_COPIES, cap // rows)
AUGMENT_ROW_CAP = 20_000
NO_LABEL = -1  # an augmented (or unlabeled) row's label; a task loss reading it fails loudly (index -1)

# a word that may be replaced: two letters or more (digits, punctuation, single letters such as the s of "it's" and
# anything else stay as they are)
_WORD = re.compile(r"[^\W\d_]{2,}")


def auto_copies(train_rows: int) -> int:
    """The default number of copies per row for a task of `train_rows` rows (0 for a large task)."""
    return min(AUGMENT_MAX_COPIES, AUGMENT_ROW_CAP // max(1, train_rows))


def words_of(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of the words of `text`."""
    return [m.span() for m in _WORD.finditer(text)]


def _piece_ids(tokenizer, words: list[str]) -> list[list[int]]:
    """Each word's token ids as it reads inside a sentence (after a space)."""
    out = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    return [list(ids) for ids in out]


@dataclass
class WordVocab:
    """The vocabulary entries that are one whole word (a replacement candidate): their strings and token ids."""

    words: list[str]
    ids: np.ndarray

    @staticmethod
    def of(tokenizer) -> WordVocab:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        ids = [i for i in range(len(tokenizer)) if i not in special]
        strings = [s.strip() for s in tokenizer.batch_decode([[i] for i in ids])]
        maybe = [(s, i) for s, i in zip(strings, ids) if len(s) >= 2 and _WORD.fullmatch(s)]
        # a candidate must come back as this one token when it is written after a space: a word start, not a piece
        pieces = _piece_ids(tokenizer, [s for s, _ in maybe])
        seen: set[str] = set()
        words, keep = [], []
        for (s, i), p in zip(maybe, pieces):
            if p == [i] and s.lower() not in seen:
                seen.add(s.lower())
                words.append(s)
                keep.append(i)
        if not words:
            raise InternalError("the tokenizer has no whole-word entries to draw replacements from")
        return WordVocab(words, np.asarray(keep, dtype=np.int64))


def embedding_neighbours(
    embeddings: torch.Tensor, tokenizer, vocab: WordVocab, words: list[str], k: int = AUGMENT_CANDIDATES
) -> dict[str, list[str]]:
    """Each word's `k` nearest whole words by cosine in the input-embedding space (itself left out)."""
    emb = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
    cand = emb[torch.from_numpy(vocab.ids)]
    out: dict[str, list[str]] = {}
    pieces = _piece_ids(tokenizer, words)
    for start in range(0, len(words), 1024):
        chunk = words[start : start + 1024]
        vecs = torch.stack(
            [emb[torch.tensor(p)].mean(0) if p else torch.zeros(emb.shape[1]) for p in pieces[start : start + 1024]]
        )
        sims = torch.nn.functional.normalize(vecs, dim=1) @ cand.T
        top = sims.topk(min(k + 1, cand.shape[0]), dim=1).indices.numpy()
        for w, row in zip(chunk, top):
            lw = w.lower()
            out[w] = [vocab.words[j] for j in row if vocab.words[j].lower() != lw][:k]
    return out


class MaskedLM:
    """A checkpoint's masked-LM head, asked for each one-piece word's replacements in its sentence."""

    def __init__(self, model, tokenizer, vocab: WordVocab, max_length: int, batch_size: int = 64):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.vocab_ids = torch.from_numpy(vocab.ids)
        self.vocab_words = vocab.words
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.inference_mode()
    def candidates(self, text: str, spans: list[tuple[int, int]], k: int = AUGMENT_CANDIDATES) -> dict[int, list[str]]:
        """{word index: candidates} for the words of `text` that are one token (others are absent)."""
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        where: dict[int, int] = {}  # word index -> its token position, for words that are exactly one token
        for w, (a, b) in enumerate(spans):
            toks = [t for t, (s, e) in enumerate(offsets) if e > s and s < b and e > a]
            if len(toks) == 1 and offsets[toks[0]][0] <= a and offsets[toks[0]][1] >= b:
                where[w] = toks[0]
        out: dict[int, list[str]] = {}
        items = list(where.items())
        mask_id = self.tokenizer.mask_token_id
        for s in range(0, len(items), self.batch_size):
            part = items[s : s + self.batch_size]
            batch = torch.tensor([ids] * len(part))
            for r, (_, pos) in enumerate(part):
                batch[r, pos] = mask_id
            batch = batch.to(self.device)
            logits = self.model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
            at = logits[torch.arange(len(part)), torch.tensor([p for _, p in part])].float().cpu()
            picked = at[:, self.vocab_ids]
            top = picked.topk(min(k + 1, picked.shape[1]), dim=1).indices.numpy()
            for (w, _), row in zip(part, top):
                word = text[spans[w][0] : spans[w][1]].lower()
                out[w] = [self.vocab_words[j] for j in row if self.vocab_words[j].lower() != word][:k]
        return out


def load_masked_lm(path: str):
    """The checkpoint's masked-LM model when its head is all there (its weights in the checkpoint); else None."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except Exception:  # no MLM class for this architecture, or no head: the embedding neighbours do every word
        return None
    if info.get("missing_keys"):
        return None  # a head made up of fresh random weights would predict noise
    return model.float().eval()


def augment_text(
    text: str, spans, rng: np.random.Generator, neighbours: dict[str, list[str]], mlm: dict[int, list[str]] | None
) -> str:
    """One copy of `text`: each word replaced with probability AUGMENT_PROB by a random candidate."""
    parts, at = [], 0
    for w, (a, b) in enumerate(spans):
        draw = rng.random()
        cands = (mlm or {}).get(w) or neighbours.get(text[a:b]) or []
        if draw < AUGMENT_PROB and cands:
            parts.append(text[at:a])
            parts.append(cands[int(rng.integers(len(cands)))])
            at = b
    parts.append(text[at:])
    return "".join(parts)


class Augmenter:
    """Makes the copies of rows: the embedding neighbours of every word of the table, and the MLM when there is one."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, mlm_model=None, max_length: int = 128):
        self.tokenizer = tokenizer
        self.vocab = WordVocab.of(tokenizer)
        self.embeddings = embeddings
        self.mlm = None if mlm_model is None else MaskedLM(mlm_model, tokenizer, self.vocab, max_length)
        self.neighbours: dict[str, list[str]] = {}

    @property
    def source(self) -> str:
        """What the replacements come from, for the report."""
        if self.mlm is None:
            return "input-embedding neighbours (the checkpoint has no masked-LM head)"
        return "masked-LM predictions (one-piece words) and input-embedding neighbours (words of several pieces)"

    def learn_words(self, table: TextTable) -> None:
        """Find the neighbours of every word of `table` (once, before any copies are made)."""
        words: set[str] = set()
        for texts in (table.text_a, table.text_b or []):
            for t in texts:
                words.update(t[a:b] for a, b in words_of(t))
        todo = sorted(words - set(self.neighbours))
        self.neighbours.update(embedding_neighbours(self.embeddings, self.tokenizer, self.vocab, todo))

    def copies(self, table: TextTable, first_row: int, copies: int, seed: int) -> TextTable:
        """`copies` variants of each row of `table`, whose first row is row `first_row` of the whole set (each row's
        generator is seeded by its number there); a variant identical to its row is left out. Labels: NO_LABEL."""
        a_out: list[str] = []
        b_out: list[str] | None = [] if table.text_b is not None else None
        for i in range(len(table)):
            rng = np.random.default_rng([seed, first_row + i])
            sides = [table.text_a[i]] + ([] if table.text_b is None else [table.text_b[i]])
            spans = [words_of(s) for s in sides]
            mlm = [self.mlm.candidates(s, sp) if self.mlm else None for s, sp in zip(sides, spans)]
            for _ in range(copies):
                new = [augment_text(s, sp, rng, self.neighbours, m) for s, sp, m in zip(sides, spans, mlm)]
                if new == sides:
                    continue
                a_out.append(new[0])
                if b_out is not None:
                    b_out.append(new[1])
        return TextTable(a_out, b_out, [NO_LABEL] * len(a_out), "augmented")
