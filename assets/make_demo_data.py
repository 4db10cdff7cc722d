"""Generate the built-in synthetic sentiment set (train.tsv, dev.tsv) from templates, deterministically.

The set is made hard enough that the sub-networks differ: a third of the dev rows use sentiment words that never
occur in train (only what the pretrained model already knows about them carries over), and the label often
depends on how clauses combine (negations, double negations, "but" / "although" contrasts, comparisons with what
the writer expected), which shallow and narrow sub-networks get wrong more often than the full model.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

SEED = 20261206
N_TRAIN = 800
N_DEV = 200
DEV_UNSEEN_SHARE = 0.35  # dev rows whose sentiment words never occur in train

SUBJECTS = {
    "product": [
        "this phone",
        "the laptop",
        "these headphones",
        "the blender",
        "this backpack",
        "the charger",
        "the keyboard",
        "this camera",
        "the vacuum cleaner",
        "this kettle",
        "the desk lamp",
        "the smartwatch",
    ],
    "film": [
        "this movie",
        "the film",
        "the sequel",
        "the documentary",
        "the soundtrack",
        "the ending",
        "the plot",
        "the lead actor",
        "this comedy",
        "the thriller",
        "the animation",
        "the script",
    ],
    "food": [
        "the pasta",
        "this restaurant",
        "the soup",
        "the coffee",
        "the pizza",
        "the dessert",
        "the service",
        "the burger",
        "this bakery",
        "the curry",
        "the salad",
        "the breakfast",
    ],
}

# sentiment words seen in training
POSITIVE = ["good", "great", "excellent", "wonderful", "delightful", "reliable", "charming", "impressive", "enjoyable"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "disappointing", "bland", "flimsy", "dull", "mediocre"]
# sentiment words that only dev uses: the students must keep what the pretrained model knows about them
UNSEEN_POSITIVE = ["superb", "marvellous", "splendid", "terrific", "outstanding", "gorgeous", "flawless", "stellar"]
UNSEEN_NEGATIVE = ["dreadful", "horrible", "lousy", "pathetic", "shoddy", "abysmal", "tedious", "miserable"]

INTENSIFIERS = ["very", "really", "truly", "absolutely", "quite", "incredibly", "rather", "pretty", "so"]
FILLERS = [
    "honestly",
    "to be fair",
    "overall",
    "i think",
    "frankly",
    "in my opinion",
    "after a week",
    "for the price",
    "on the whole",
    "as expected",
    "all things considered",
]
VERBS = ["is", "was", "seemed", "felt", "turned out to be", "looked"]
NEGATED_VERBS = ["is not", "was not", "isn't", "wasn't", "never felt", "did not seem", "hardly seemed"]


def _maybe(rng: random.Random, p: float, text: str) -> str:
    return text if rng.random() < p else ""


def _word(rng: random.Random, positive: bool, unseen: bool) -> str:
    if unseen:
        return rng.choice(UNSEEN_POSITIVE if positive else UNSEEN_NEGATIVE)
    return rng.choice(POSITIVE if positive else NEGATIVE)


def _adjective(rng: random.Random, positive: bool, unseen: bool) -> str:
    intensifier = _maybe(rng, 0.4, rng.choice(INTENSIFIERS))
    return f"{intensifier} {_word(rng, positive, unseen)}".strip()


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _sentence(rng: random.Random, unseen: bool) -> tuple[str, int]:
    """One review and its label (1 = positive); `unseen`: its sentiment words come from the dev-only lists."""
    domain = rng.choice(sorted(SUBJECTS))
    subject = rng.choice(SUBJECTS[domain])
    other = rng.choice([s for s in SUBJECTS[domain] if s != subject])
    label = rng.random() < 0.5
    kind = rng.random()
    if kind < 0.22:
        # plain statement: the adjective carries the label
        text = f"{subject} {rng.choice(VERBS)} {_adjective(rng, label, unseen)}"
    elif kind < 0.40:
        # negation flips the adjective, so a bag of words alone gets these wrong
        text = f"{subject} {rng.choice(NEGATED_VERBS)} {_word(rng, not label, unseen)}"
    elif kind < 0.52:
        # contrast: the clause after "but" decides
        first = _word(rng, not label, unseen)
        then = rng.choice(["ended up", "became", "proved"])
        text = f"{subject} seemed {first} at first but {then} {_adjective(rng, label, unseen)}"
    elif kind < 0.64:
        # "although": the concession comes first and the main clause decides
        text = (
            f"although {other} was {_word(rng, not label, unseen)} , "
            f"{subject} {rng.choice(VERBS)} {_adjective(rng, label, unseen)}"
        )
    elif kind < 0.74:
        # two clauses that agree, the second negated with the opposite word: "X was good and not at all dull"
        text = (
            f"{subject} {rng.choice(VERBS)} {_word(rng, label, unseen)} and not at all {_word(rng, not label, unseen)}"
        )
    elif kind < 0.84:
        # what the writer expected against what came
        expected = _word(rng, not label, unseen)
        got = _word(rng, label, unseen)
        text = f"i expected {subject} to be {expected} , but it was {got}"
    elif kind < 0.92:
        # double negation: "not without" / "never anything but"
        word = _word(rng, label, unseen)
        text = rng.choice(
            [
                f"i can't say {subject} was anything but {word}",
                f"nobody could call {subject} anything other than {word}",
            ]
        )
    else:
        noun = subject.split()[-1]
        if rng.random() < 0.5:
            phrase = _adjective(rng, label, unseen)
            text = f"what {_article(phrase)} {phrase} {noun}"
        else:
            word = _word(rng, not label, unseen)
            text = f"not {_article(word)} {word} {noun} at all"
    if rng.random() < 0.35:
        text = f"{rng.choice(FILLERS)} , {text}"
    elif rng.random() < 0.15:
        text = f"{text} , {rng.choice(FILLERS)}"
    text = " ".join(text.split()) + rng.choice([" .", " .", " !"])
    return text[0].upper() + text[1:], int(label)


def _balanced(rng: random.Random, n: int, unseen_share: float, taken: set[str]) -> list[tuple[str, int]]:
    """`n` distinct rows not in `taken`, half of each label, about `unseen_share` of them with dev-only words."""
    rows: list[tuple[str, int]] = []
    counts = [0, 0]
    while len(rows) < n:
        unseen = rng.random() < unseen_share
        text, label = _sentence(rng, unseen)
        if text in taken or counts[label] >= n // 2:
            continue
        taken.add(text)
        counts[label] += 1
        rows.append((text, label))
    return rows


def generate(seed: int = SEED) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    rng = random.Random(seed)
    taken: set[str] = set()
    train = _balanced(rng, N_TRAIN, 0.0, taken)
    dev = _balanced(rng, N_DEV, DEV_UNSEEN_SHARE, taken)
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def write(out_dir: Path, seed: int = SEED) -> tuple[Path, Path]:
    train, dev = generate(seed)
    paths = []
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        path = Path(out_dir) / name
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("sentence\tlabel\n")
            for text, label in rows:
                fh.write(f"{text}\t{label}\n")
        paths.append(path)
    return paths[0], paths[1]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "core" / "demo"
    for p in write(target):
        print(p)
