"""Augmentation (issue 26): copies of the training rows with words replaced by the model's own masked-LM predictions
or input-embedding neighbours, and the user's unlabeled text; both enter the distilling stages only."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dynastudio.core import augmentation, jobs, stages
from dynastudio.core.config import SCHEMA_VERSION, ConfigError, ProjectConfig
from dynastudio.core.data.augment import (
    AUGMENT_PROB,
    NO_LABEL,
    Augmenter,
    WordVocab,
    auto_copies,
    embedding_neighbours,
    load_masked_lm,
    words_of,
)
from dynastudio.core.data.tables import TextTable
from dynastudio.core.data.unlabeled import read_unlabeled
from dynastudio.core.errors import Cancelled, DataError
from dynastudio.core.events import EventLog, LogMessage, StopToken
from dynastudio.core.models import load_tokenizer
from dynastudio.core.prepare import new_project, prepare_inputs
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from helpers import tiny_project_config, tiny_sentences


def _augmenter(tiny_model_dir, seed: int = 0) -> Augmenter:
    tok = load_tokenizer(str(tiny_model_dir))
    emb = torch.randn(len(tok), 16, generator=torch.Generator().manual_seed(seed))
    return Augmenter(tok, emb)


def test_the_default_makes_more_copies_for_a_smaller_task_and_none_for_a_large_one():
    assert auto_copies(500) == 20  # capped per row
    assert auto_copies(4_000) == 5
    assert auto_copies(10_000) == 2
    assert auto_copies(20_001) == 0
    assert auto_copies(4_000) * 4_000 <= 20_000


def test_copies_replace_words_by_their_candidates_only_and_are_the_same_however_the_rows_are_split(tiny_model_dir):
    aug = _augmenter(tiny_model_dir)
    rows = [s for s, _ in tiny_sentences(40, 3)]
    table = TextTable([r + " , 42 !" for r in rows], None, [0] * len(rows), "t")
    aug.learn_words(table)
    whole = aug.copies(table, 0, 4, seed=7)
    parts = aug.copies(table.select(range(25)), 0, 4, seed=7).text_a
    parts += aug.copies(table.select(range(25, 40)), 25, 4, seed=7).text_a
    assert whole.text_a == parts  # each row's generator is seeded by its number: a resumed build makes the same
    assert whole.labels == [NO_LABEL] * len(whole)
    assert aug.copies(table, 0, 4, seed=8).text_a != whole.text_a
    changed = kept = 0
    for i, source in enumerate(table.text_a):  # row by row (the same copies, as above), to know each one's source
        for text in aug.copies(table.select([i]), i, 4, seed=7).text_a:
            assert text.endswith(" , 42 !")  # digits and punctuation stay
            assert len(words_of(text)) == len(words_of(source))
            for (a, b), (c, d) in zip(words_of(source), words_of(text)):
                old, new = source[a:b], text[c:d]
                if old == new:
                    kept += 1
                else:
                    assert new in aug.neighbours[old]
                    changed += 1
    # each word is drawn with probability 0.4; a candidate equal to the word cannot be (it is left out)
    assert changed and abs(changed / (changed + kept) - AUGMENT_PROB) < 0.08
    assert len(whole) <= 4 * len(table)  # a copy identical to its row is left out


def test_embedding_neighbours_are_the_nearest_whole_words(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    vocab = WordVocab.of(tok)
    assert "[MASK]" not in vocab.words and "good" in vocab.words
    emb = torch.randn(len(tok), 8, generator=torch.Generator().manual_seed(0))
    good, great, bad = (tok.convert_tokens_to_ids(w) for w in ("good", "great", "bad"))
    emb[great] = emb[good] * 2  # the same direction: cosine 1
    emb[bad] = -emb[good]  # the opposite one: last
    near = embedding_neighbours(emb, tok, vocab, ["good"], k=len(vocab.words))["good"]
    assert near[0] == "great" and near[-1] == "bad" and "good" not in near


def test_the_masked_lm_is_used_only_when_the_checkpoint_has_its_head(tiny_model_dir, tmp_path):
    from transformers import BertForMaskedLM

    from helpers import tiny_config

    assert load_masked_lm(str(tiny_model_dir)) is None  # a classifier checkpoint: a head would be random weights
    mlm_dir = tmp_path / "mlm"
    torch.manual_seed(0)
    BertForMaskedLM(tiny_config()).save_pretrained(str(mlm_dir))
    tok = load_tokenizer(str(tiny_model_dir))
    tok.save_pretrained(str(mlm_dir))
    model = load_masked_lm(str(mlm_dir))
    assert model is not None
    aug = Augmenter(tok, model.get_input_embeddings().weight.detach(), model, max_length=32)
    assert aug.source.startswith("masked-LM")
    text = "the film was good and very dull"
    cands = aug.mlm.candidates(text, words_of(text))
    assert set(cands) == set(range(7))  # every word is one piece of this vocabulary
    with torch.inference_mode():  # candidate 0 of "good" is the head's top whole word at that position, "good" aside
        ids = tok(text, return_tensors="pt")["input_ids"]
        ids[0, 4] = tok.mask_token_id
        logits = model(input_ids=ids).logits[0, 4]
    order = [tok.convert_ids_to_tokens(int(i)) for i in logits.argsort(descending=True)]
    order = [w for w in order if w in aug.vocab.words and w != "good"]
    assert cands[3][:3] == order[:3]


def _run(project, until, events=None, stop=None):
    return jobs.run("run", project, RunRequest(until=until), events or EventLog(), stop)


def test_augmented_and_unlabeled_rows_train_the_distilling_stages_only(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch, cli
):
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("".join(f"{s}\n" for s, _ in tiny_sentences(30, 9)) + "\n\n", encoding="utf-8")
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, augment=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unlabeled=str(unlabeled)))
    project = new_project(tmp_path / "p", cfg)
    seen: dict[str, tuple[int, set]] = {}
    real = stages._train

    def spy(inputs, stage, *args, **kwargs):
        data = kwargs.get("data")
        data = data if data is not None else (inputs.train if stage == "finetune" else inputs.student_rows)
        seen[stage] = (len(data), set(map(float, data.labels)))
        return real(inputs, stage, *args, **kwargs)

    monkeypatch.setattr(stages, "_train", spy)
    _run(project, "depth")
    inputs = prepare_inputs(Project.open(project.root))
    info = Project.open(project.root).stage_info("width")["augment"]
    assert info["copies"] == 2 and info["source_rows"] == len(inputs.student_rows)
    assert 0 < info["rows"] <= 2 * len(inputs.student_rows) and "embedding" in info["source"]
    assert info["unlabeled"] == {"file": str(unlabeled), "rows": 30}
    assert seen["finetune"] == (len(inputs.train), {0.0, 1.0})  # the teacher learns labels only
    extra = len(inputs.student_rows) + info["rows"] + 30
    for stage in ("width", "depth"):
        assert seen[stage] == (extra, {0.0, 1.0, float(NO_LABEL)})
    assert (project.root / "cache" / "augment.safetensors").is_file()
    assert not list((project.root / "cache").glob("augment-*"))  # the parts go once the rows are made
    status = cli("status", str(project.root)).stdout
    assert f"{info['rows']:,} augmented rows (2 copies" in status and "input-embedding neighbours" in status
    assert f"30 unlabeled rows from {unlabeled}" in status

    built = []
    monkeypatch.setattr(augmentation, "_build", lambda *a, **k: built.append(a))
    rows, facts = augmentation.distill_rows(inputs, EventLog())
    assert not built and len(rows) == extra and facts == info  # read from the cache


def test_a_cancelled_build_resumes_from_its_parts_and_makes_the_same_rows(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    monkeypatch.setattr(augmentation, "PART_ROWS", 50)
    made = []
    real = Augmenter.copies

    def counting(self, table, first_row, copies, seed):
        made.append(first_row)
        return real(self, table, first_row, copies, seed)

    monkeypatch.setattr(Augmenter, "copies", counting)
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, augment=3)
    whole = prepare_inputs(new_project(tmp_path / "whole", cfg))
    full, _ = augmentation.augmented_rows(whole, EventLog())
    assert made == [0, 50, 100, 150]

    project = new_project(tmp_path / "p", cfg)
    inputs = prepare_inputs(project)
    stop = StopToken()

    def sink(event):
        if isinstance(event, LogMessage) and event.text.startswith("augmenting: 100 of"):
            stop.set()

    made.clear()
    with pytest.raises(Cancelled):
        augmentation.augmented_rows(inputs, sink, stop)
    assert made == [0, 50] and not (project.root / "cache" / "augment.safetensors").exists()
    made.clear()
    rows, info = augmentation.augmented_rows(inputs, EventLog())
    assert made == [100, 150]  # the two parts made before the cancel are kept
    assert [list(r) for r in rows.input_ids] == [list(r) for r in full.input_ids]
    assert info.rows == len(full) and info.copies == 3


def test_the_augment_setting_is_checked_migrated_and_changed_by_the_cli(tiny_model_dir, tiny_task_files, tmp_path, cli):
    raw = json.loads(ProjectConfig().to_json())
    raw["train"]["augment"] = 2.5
    with pytest.raises(ConfigError, match="train.augment: 2.5 must be a whole number of copies"):
        ProjectConfig.from_json(json.dumps(raw))
    raw["train"].pop("augment")
    raw["schema_version"] = 3
    assert ProjectConfig.from_json(json.dumps(raw)).train.augment == 0  # an older project keeps its rows
    assert ProjectConfig.from_json(json.dumps(raw)).schema_version == SCHEMA_VERSION

    train, dev = tiny_task_files
    args = ["new", str(tmp_path / "p"), "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev)]
    bad = cli(*args, "--augment", "many")
    assert bad.returncode != 0 and "--augment many: write a whole number of copies from 0 to 100, or auto" in bad.stderr
    assert not (tmp_path / "p").exists()
    made = cli(*args, "--profile", "quick", "--augment", "auto")  # quick's own is 0
    assert made.returncode == 0 and Project.open(tmp_path / "p").config.train.augment is None
    rows = len(prepare_inputs(Project.open(tmp_path / "p")).student_rows)
    assert f"augmentation: auto gives 20 copies of each of the {rows:,} student rows (about 21x" in made.stdout


def test_run_augment_reopens_the_distilling_stages(tiny_model_dir, tiny_task_files, tmp_path, cli):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, depth_epochs=0.25)
    project = new_project(tmp_path / "p", cfg)
    _run(project, "width")
    assert cli("run", str(project.root), "--until", "rewire", "--augment", "1", "--events", "none").returncode == 0
    p = Project.open(project.root)
    assert p.config.train.augment == 1 and not p.is_done("width") and p.is_done("rewire")


def test_unlabeled_files_are_read_like_the_task_files_and_a_bad_one_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("one text\n\n  \nanother one\n", encoding="utf-8")
    assert read_unlabeled(tmp_path / "a.txt", pair=False).text_a == ["one text", "another one"]
    (tmp_path / "p.txt").write_text("left\tright\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p.txt: line 2 has 1 tab-separated part\(s\)"):
        read_unlabeled(tmp_path / "p.txt", pair=True)
    (tmp_path / "q.csv").write_text("id,sentence1,sentence2,source\n1,a b,c d,x\n", encoding="utf-8")
    t = read_unlabeled(tmp_path / "q.csv", pair=True, text_columns=("sentence1", "sentence2"))
    assert (t.text_a, t.text_b) == (["a b"], ["c d"])
    with pytest.raises(DataError, match=r"q.csv: line 1 \(header\) has 4 columns .* none named sentence"):
        read_unlabeled(tmp_path / "q.csv", pair=False, text_columns=("sentence",))
    (tmp_path / "r.jsonl").write_text('{"review": "fine"}\n{"review": "dull"}\n', encoding="utf-8")
    assert read_unlabeled(tmp_path / "r.jsonl", pair=False, text_columns=("sentence",)).text_a == ["fine", "dull"]
    with pytest.raises(DataError, match=r"x.docx: unsupported file type \(.docx\)"):
        (tmp_path / "x.docx").write_text("x")
        read_unlabeled(tmp_path / "x.docx", pair=False)


def test_a_bad_unlabeled_file_stops_new_before_anything_is_written(tiny_model_dir, tiny_task_files, tmp_path, cli):
    train, dev = tiny_task_files
    bad = tmp_path / "u.csv"
    bad.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    out = cli(
        "new", str(tmp_path / "p"), "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
        "--unlabeled", str(bad),
    )  # fmt: skip
    assert out.returncode != 0 and "u.csv: line 1 (header) has 3 columns" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "p").exists()


def test_the_words_of_a_text_are_its_runs_of_letters():
    text = "it's a well-made film, 10/10!"
    assert [text[a:b] for a, b in words_of(text)] == ["it", "well", "made", "film"]


def test_the_estimate_counts_the_augmented_rows_before_and_after_they_are_made(
    tiny_model_dir, tiny_task_files, tmp_path
):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, augment=2)
    inputs = prepare_inputs(new_project(tmp_path / "p", cfg))
    n = len(inputs.student_rows)
    assert len(augmentation.planned_distill_rows(inputs)) == 3 * n  # not made yet: each row once per copy
    made, _ = augmentation.augmented_rows(inputs, EventLog())
    assert len(augmentation.planned_distill_rows(inputs)) == n + len(made) <= 3 * n
