"""Generate the built-in synthetic sentiment set (train.tsv, dev.tsv) from templates, deterministically."""

from __future__ import annotations

import random
import sys
from pathlib import Path

SEED = 20240611
N_TRAIN = 800
N_DEV = 200

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

POSITIVE = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "delightful",
    "reliable",
    "charming",
    "impressive",
    "fantastic",
    "enjoyable",
    "solid",
    "lovely",
    "brilliant",
    "pleasant",
    "superb",
    "satisfying",
]
NEGATIVE = [
    "bad",
    "terrible",
    "awful",
    "boring",
    "disappointing",
    "bland",
    "flimsy",
    "dull",
    "mediocre",
    "poor",
    "clumsy",
    "unpleasant",
    "annoying",
    "forgettable",
    "awkward",
    "sloppy",
]
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
    "to my surprise",
    "all things considered",
]
VERBS = ["is", "was", "seemed", "felt", "turned out to be", "looked"]
NEGATED_VERBS = ["is not", "was not", "isn't", "wasn't", "never felt", "did not seem"]


def _maybe(rng: random.Random, p: float, text: str) -> str:
    return text if rng.random() < p else ""


def _adjective(rng: random.Random, positive: bool) -> str:
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    intensifier = _maybe(rng, 0.4, rng.choice(INTENSIFIERS))
    return f"{intensifier} {word}".strip()


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _sentence(rng: random.Random) -> tuple[str, int]:
    domain = rng.choice(sorted(SUBJECTS))
    subject = rng.choice(SUBJECTS[domain])
    positive = rng.random() < 0.5
    kind = rng.random()
    if kind < 0.45:
        # Plain statement: the adjective carries the label.
        text = f"{subject} {rng.choice(VERBS)} {_adjective(rng, positive)}"
        label = positive
    elif kind < 0.70:
        # Negation flips the adjective, so a bag of words alone gets these wrong.
        text = f"{subject} {rng.choice(NEGATED_VERBS)} {rng.choice(POSITIVE if positive else NEGATIVE)}"
        label = not positive
    elif kind < 0.85:
        # Contrast: the clause after "but" decides.
        first = rng.choice(NEGATIVE if positive else POSITIVE)
        text = f"{subject} {rng.choice(['seemed', 'looked', 'felt', 'was'])} {first} at first but {rng.choice(['ended up', 'became', 'proved'])} {_adjective(rng, positive)}"
        label = positive
    else:
        noun = subject.split()[-1]
        if rng.random() < 0.5:
            phrase = _adjective(rng, positive)
            text = f"what {_article(phrase)} {phrase} {noun}"
            label = positive
        else:
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            text = f"not {_article(word)} {word} {noun} at all"
            label = not positive
    filler = rng.choice(FILLERS)
    if rng.random() < 0.35:
        text = f"{filler} , {text}"
    elif rng.random() < 0.15:
        text = f"{text} , {filler}"
    text = " ".join(text.split()) + rng.choice([" .", " .", " !"])
    return text[0].upper() + text[1:], int(label)


def generate(seed: int = SEED) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    rng = random.Random(seed)
    want = (N_TRAIN + N_DEV) // 2
    seen: dict[str, int] = {}  # dict, not set: keeps insertion order so output is reproducible
    counts = [0, 0]
    while min(counts) < want:
        text, label = _sentence(rng)
        if text in seen or counts[label] >= want:
            continue
        seen[text] = label
        counts[label] += 1
    rows = list(seen.items())
    rng.shuffle(rows)
    dev = [r for r in rows if r[1] == 0][: N_DEV // 2] + [r for r in rows if r[1] == 1][: N_DEV // 2]
    dev_texts = {t for t, _ in dev}
    train = [r for r in rows if r[0] not in dev_texts]
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
