"""Tests for core.data: file readers and their errors, tables and splits, GLUE layouts, the datasets path, column
guessing, task loading and the demo set (batching: test_batching.py; metrics: test_metrics.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dynastudio.core.config import DataConfig
from dynastudio.core.data.columns import ColumnGuess, check_roles, guess_columns, resolve_columns
from dynastudio.core.data.readers import peek_rows, read_table
from dynastudio.core.data.tables import TextTable, split_heldout, subset
from dynastudio.core.data.task import demo_resource, load_task_data
from dynastudio.core.errors import ConfigError, DataError

# The real GLUE copies live beside the checkout (../shared/data/glue) and are never copied into the repo.
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def raises_data_error(fn, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- bad data


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "nope.csv", "not found")


def test_missing_text_column_lists_columns(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nhello,1\nbye,0\n")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "'sentence'", "text, label")


def test_missing_label_column_lists_columns(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\ttarget\nhello\t1\nbye\t0\n")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.tsv", "'label'", "sentence, target")


def test_empty_file(tmp_path):
    path = write(tmp_path / "train.csv", "")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "empty")


def test_header_only(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\n")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "line 1", "no data rows")


def test_empty_jsonl(tmp_path):
    path = write(tmp_path / "train.jsonl", "\n\n")
    raises_data_error(lambda: read_table(path, ("text",), "label"), "train.jsonl", "empty")


def test_unknown_dev_label(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "sentence,label\na,pos\nb,neutral\n")
    _, names, _ = read_table(train, ("sentence",), "label")
    raises_data_error(
        lambda: read_table(dev, ("sentence",), "label", names), "dev.csv", "line 3", "'neutral'", "neg, pos"
    )


def test_not_utf8_names_line(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\ncaf\xe9 noir\t0\n", encoding="latin-1")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.tsv", "line 3", "UTF-8")


def test_too_few_fields(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\na,1\nb,0\nonly text here\nc,1\n")
    msg = raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "line 4", "1 field,")
    assert "sentence, label" in msg


def test_too_many_fields_in_csv_suggests_quoting(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\nyes, really,1\nb,0\n")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "line 2", "quote")


def test_missing_label_value(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\na,1\nb,\nc,0\n")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "line 3", "'label'")


def test_missing_label_value_jsonl(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": null}\n')
    raises_data_error(lambda: read_table(path, ("text",), "label"), "train.jsonl", "line 2", "'label'")


def test_empty_text_is_allowed(tmp_path):
    path = write(tmp_path / "train.csv", 'sentence,label\n"",1\nb,0\n')
    table, _, _ = read_table(path, ("sentence",), "label")
    assert table.text_a == ["", "b"]


def test_jsonl_line_not_object(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n["b", 0]\n')
    raises_data_error(lambda: read_table(path, ("text",), "label"), "train.jsonl", "line 2", "JSON object")


def test_jsonl_invalid_json(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", label: 0}\n')
    raises_data_error(lambda: read_table(path, ("text",), "label"), "train.jsonl", "line 3", "not valid JSON")


def test_jsonl_missing_key_lists_keys(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"review": "a", "label": 1}\n')
    raises_data_error(lambda: read_table(path, ("text",), "label"), "train.jsonl", "'text'", "review, label")


def test_bad_extension(tmp_path):
    path = write(tmp_path / "train.xlsx", "whatever")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.xlsx", ".xlsx", ".csv")


def test_single_label_in_train(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\na,1\nb,1\n")
    raises_data_error(lambda: read_table(path, ("sentence",), "label"), "train.csv", "'label'", "2 different")


def test_unknown_glue_task_lists_valid_ones():
    raises_data_error(lambda: load_task_data(DataConfig(kind="glue", task="squad")), "squad", "sst2", "mnli")


def test_config_errors():
    with pytest.raises(ConfigError):
        load_task_data(DataConfig(kind="spreadsheet"))
    with pytest.raises(ConfigError):
        load_task_data(DataConfig(kind="files", train="a.csv"))
    with pytest.raises(ConfigError):
        load_task_data(DataConfig(kind="glue"))


# --------------------------------------------------------------------------- happy paths


def test_csv_single_sentence_int_labels(tmp_path):
    path = write(tmp_path / "train.csv", 'sentence,label\n"hello, world",1\nbye,0\n"say ""hi""",1\n')
    table, names, regression = read_table(path, ("sentence",), "label")
    assert table.text_a == ["hello, world", "bye", 'say "hi"']
    assert table.text_b is None
    assert names == ("0", "1") and table.labels == [1, 0, 1] and not regression
    assert len(table) == 3 and table.source == str(path)


def test_int_labels_sort_numerically_and_accept_float_spelling(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence\tlabel\na\t10\nb\t2\nc\t9\n")
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nd\t2.0\n")
    table, names, _ = read_table(train, ("sentence",), "label")
    assert names == ("2", "9", "10") and table.labels == [2, 0, 1]
    dev_table, _, _ = read_table(dev, ("sentence",), "label", names)
    assert dev_table.labels == [0]


def test_tsv_two_text_columns_string_labels_with_bom(tmp_path):
    path = write(
        tmp_path / "pairs.tsv",
        '\ufeffpremise\thypothesis\tlabel\nA "quoted" man sleeps\tnobody sleeps\tcontradiction\n'
        "a dog runs\tan animal moves\tentailment\nx\ty\tneutral\n",
    )
    table, names, regression = read_table(path, ("premise", "hypothesis"), "label")
    assert table.text_a[0] == 'A "quoted" man sleeps'
    assert table.text_b == ["nobody sleeps", "an animal moves", "y"]
    assert names == ("contradiction", "entailment", "neutral")
    assert table.labels == [0, 1, 2] and not regression


def test_jsonl_pairs(tmp_path):
    rows = [
        {"q": "is it good?", "a": "yes", "label": "yes"},
        {"q": "is it bad?", "a": None, "label": "no"},
        {"q": 42, "a": "maybe", "label": "yes"},
    ]
    path = write(tmp_path / "qa.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    table, names, regression = read_table(path, ("q", "a"), "label")
    assert table.text_a == ["is it good?", "is it bad?", "42"]
    assert table.text_b == ["yes", "", "maybe"]
    assert names == ("no", "yes") and table.labels == [1, 0, 1] and not regression


def test_float_labels_mean_regression(tmp_path):
    train = write(tmp_path / "train.csv", "s1,s2,score\na,b,0.5\nc,d,4\ne,f,3.25\n")
    table, names, regression = read_table(train, ("s1", "s2"), "score")
    assert regression and names is None
    assert table.labels == [0.5, 4.0, 3.25] and all(isinstance(v, float) for v in table.labels)
    dev = write(tmp_path / "dev.csv", "s1,s2,score\na,b,high\n")
    raises_data_error(
        lambda: read_table(dev, ("s1", "s2"), "score", regression=True), "dev.csv", "line 2", "not a number"
    )


def test_files_kind_guesses_columns(tmp_path):
    train = write(tmp_path / "reviews.csv", "id,text,label\n1,good,pos\n2,bad,neg\n")
    dev = write(tmp_path / "dev.csv", "id,text,label\n3,fine,pos\n")
    task = load_task_data(DataConfig(kind="files", train=str(train), dev=str(dev)))
    assert task.name == "reviews" and task.metric == "accuracy" and task.num_labels == 2
    assert task.train.text_a == ["good", "bad"] and task.dev.labels == [1]


def test_files_kind_regression_metric(tmp_path):
    train = write(
        tmp_path / "sts.jsonl",
        '{"sentence1": "a", "sentence2": "b", "label": 0.5}\n{"sentence1": "c", "sentence2": "d", "label": 2}\n',
    )
    task = load_task_data(DataConfig(kind="files", train=str(train), dev=str(train)))
    assert task.is_regression and task.num_labels == 1 and task.metric == "pearson_spearman"
    assert task.train.text_b == ["b", "d"] and task.label_names is None


def test_files_kind_unknown_dev_label(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,label\na,0\nb,1\n")
    dev = write(tmp_path / "dev.csv", "sentence,label\nc,1\nd,2\n")
    cfg = DataConfig(kind="files", train=str(train), dev=str(dev), text_columns=("sentence",), label_column="label")
    raises_data_error(lambda: load_task_data(cfg), "dev.csv", "line 3", "'2'")


def test_select_split_and_subset(tmp_path):
    table = TextTable([f"t{i}" for i in range(50)], None, [i % 2 for i in range(50)], "x")
    rest, held = split_heldout(table, 10, seed=3)
    assert len(rest) == 40 and len(held) == 10
    assert set(rest.text_a) | set(held.text_a) == set(table.text_a)
    assert not set(rest.text_a) & set(held.text_a)
    again_rest, again_held = split_heldout(table, 10, seed=3)
    assert again_held.text_a == held.text_a and again_rest.text_a == rest.text_a
    assert split_heldout(table, 10, seed=4)[1].text_a != held.text_a
    with pytest.raises(DataError):
        split_heldout(table, 50, seed=0)
    small = subset(table, 7, seed=1)
    assert len(small) == 7 and small.text_a == subset(table, 7, seed=1).text_a
    assert small.labels == [int(t[1:]) % 2 for t in small.text_a]
    assert len(subset(table, 500, seed=1)) == 50


# --------------------------------------------------------------------------- GLUE, local files


def make_glue(root: Path) -> Path:
    write(root / "SST-2" / "train.tsv", 'sentence\tlabel\nit \'s "great" \t1\nawful film \t0\nfine \t1\n')
    write(root / "SST-2" / "dev.tsv", "sentence\tlabel\ncharming \t1\n")
    # No header; a stray quote must not swallow the next line; the last line has no newline.
    write(
        root / "CoLA" / "train.tsv",
        'gj04\t1\t\tSusan whispered "Shut up.\ngj04\t0\t*\tThe more does Bill smoke.\ngj04\t1\t\tBill left.\n',
    )
    write(root / "CoLA" / "dev.tsv", "gj04\t0\t*\tHim left.\ngj04\t1\t\tHe left.")
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    write(
        root / "MNLI" / "train.tsv",
        header + "0\t1\t1e\tgov\tA man eats.\tSomeone eats.\tentailment\tentailment\n"
        "1\t2\t2n\tgov\tA man eats.\tHe is hungry.\tneutral\tneutral\n"
        "2\t3\t3c\tgov\tA man eats.\tNobody eats.\tcontradiction\tcontradiction\n",
    )
    dev_header = header.replace("label1\t", "label1\tlabel2\t")
    write(
        root / "MNLI" / "dev_matched.tsv",
        dev_header + "0\t9\t9c\tfic\tThe cat sat.\tNo cat sat.\tcontradiction\tcontradiction\tcontradiction\n",
    )
    write(
        root / "STS-B" / "train.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain\tx\t2012\t1\tnone\tnone\tA plane.\tAn airplane.\t5.000\n"
        "1\tmain\tx\t2012\t2\tnone\tnone\tA cat.\tA dog.\t1.000\n",
    )
    write(
        root / "STS-B" / "dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain\tx\t2012\t1\tnone\tnone\tA man.\tA person.\t3.800\n",
    )
    return root


def test_glue_sst2_local(tmp_path):
    root = make_glue(tmp_path / "glue")
    task = load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(root)))
    assert task.name == "sst2" and task.metric == "accuracy" and task.label_names == ("0", "1")
    assert task.train.text_a[0] == 'it \'s "great" ' and task.train.labels == [1, 0, 1]
    assert task.dev.labels == [1] and task.train.source.endswith("train.tsv")


def test_glue_cola_local_has_no_header_and_folder_can_be_given_directly(tmp_path):
    root = make_glue(tmp_path / "glue")
    task = load_task_data(DataConfig(kind="glue", task="CoLA", data_dir=str(root / "CoLA")))
    assert task.metric == "matthews"
    assert task.train.text_a == ['Susan whispered "Shut up.', "The more does Bill smoke.", "Bill left."]
    assert task.train.labels == [1, 0, 1] and task.dev.labels == [0, 1]


def test_glue_mnli_local_uses_dev_matched(tmp_path):
    root = make_glue(tmp_path / "glue")
    task = load_task_data(DataConfig(kind="glue", task="mnli", data_dir=str(root)))
    assert task.label_names == ("entailment", "neutral", "contradiction") and task.num_labels == 3
    assert task.train.labels == [0, 1, 2] and task.train.text_b[1] == "He is hungry."
    assert task.dev.text_a == ["The cat sat."] and task.dev.labels == [2]
    assert task.dev.source.endswith("dev_matched.tsv")


def test_glue_stsb_local_is_regression_even_with_whole_scores(tmp_path):
    root = make_glue(tmp_path / "glue")
    task = load_task_data(DataConfig(kind="glue", task="sts-b", data_dir=str(root)))
    assert task.is_regression and task.metric == "pearson_spearman"
    assert task.train.labels == [5.0, 1.0] and task.dev.labels == [3.8]


def test_glue_local_missing_task_folder(tmp_path):
    root = make_glue(tmp_path / "glue")
    raises_data_error(lambda: load_task_data(DataConfig(kind="glue", task="rte", data_dir=str(root))), "RTE", "glue")


def test_glue_local_bad_row_names_line(tmp_path):
    root = make_glue(tmp_path / "glue")
    write(root / "SST-2" / "dev.tsv", "sentence\tlabel\ncharming \t1\nno label here\n")
    raises_data_error(
        lambda: load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(root))), "dev.tsv", "line 3"
    )


@pytest.mark.skipif(not (GLUE_DIR / "CoLA" / "dev.tsv").is_file(), reason="real GLUE files not present")
def test_real_glue_files():
    sst2 = load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(GLUE_DIR)))
    assert (len(sst2.train), len(sst2.dev)) == (67349, 872)
    cola = load_task_data(DataConfig(kind="glue", task="cola", data_dir=str(GLUE_DIR)))
    assert (len(cola.train), len(cola.dev)) == (8551, 1043)
    assert 'Susan whispered "Shut up".' in cola.train.text_a
    assert sum(cola.dev.labels) == 721


# --------------------------------------------------------------------------- GLUE through `datasets`


def make_hub_repo(root: Path) -> Path:
    train = [{"sentence": "a good film", "label": 1, "idx": 0}, {"sentence": "a bad film", "label": 0, "idx": 1}]
    validation = [{"sentence": "great", "label": 1, "idx": 0}]
    write(root / "sst2" / "train.jsonl", "\n".join(json.dumps(r) for r in train) + "\n")
    write(root / "sst2" / "validation.jsonl", "\n".join(json.dumps(r) for r in validation) + "\n")
    write(
        root / "README.md",
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n"
        "  - split: train\n    path: sst2/train.jsonl\n"
        "  - split: validation\n    path: sst2/validation.jsonl\n---\n# tiny GLUE stand-in\n",
    )
    return root


@pytest.fixture
def hub_repo(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = make_hub_repo(tmp_path / "repo")
    monkeypatch.setenv("DYNASTUDIO_GLUE_REPO", str(repo))
    return repo


def test_glue_through_datasets(hub_repo):
    task = load_task_data(DataConfig(kind="glue", task="sst2"))
    assert task.train.text_a == ["a good film", "a bad film"] and task.train.labels == [1, 0]
    assert task.dev.text_a == ["great"] and task.dev.labels == [1]
    assert task.train.source == "glue:sst2/train" and task.dev.source == "glue:sst2/validation"


def test_glue_through_datasets_rejects_unlabelled_split(hub_repo):
    write(hub_repo / "sst2" / "validation.jsonl", json.dumps({"sentence": "x", "label": -1, "idx": 0}) + "\n")
    raises_data_error(lambda: load_task_data(DataConfig(kind="glue", task="sst2")), "glue:sst2/validation", "row 1")


def test_glue_through_datasets_missing_config(hub_repo):
    raises_data_error(lambda: load_task_data(DataConfig(kind="glue", task="cola")), str(hub_repo), "cola")


def test_glue_hub_unreachable_suggests_data_dir(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("DYNASTUDIO_GLUE_REPO", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    raises_data_error(lambda: load_task_data(DataConfig(kind="glue", task="sst2")), "hub", "nyu-mll/glue", "--data-dir")


# --------------------------------------------------------------------------- demo set


def test_demo_data_loads_balanced_and_distinct():
    task = load_task_data(DataConfig(kind="demo"))
    assert task.name == "demo" and task.metric == "accuracy" and task.label_names == ("0", "1")
    assert 700 <= len(task.train) <= 900 and 150 <= len(task.dev) <= 250
    for table in (task.train, task.dev):
        share = sum(table.labels) / len(table)
        assert 0.4 <= share <= 0.6
    assert not set(task.train.text_a) & set(task.dev.text_a)
    assert len(set(task.train.text_a)) == len(task.train)
    assert demo_resource("train.tsv").is_file() and demo_resource("dev.tsv").is_file()


def test_demo_script_regenerates_the_same_files(tmp_path):
    script = Path(__file__).resolve().parents[1] / "assets" / "make_demo_data.py"
    spec = importlib.util.spec_from_file_location("make_demo", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, dev = module.write(tmp_path)
    assert train.read_bytes() == demo_resource("train.tsv").read_bytes()
    assert dev.read_bytes() == demo_resource("dev.tsv").read_bytes()


# --------------------------------------------------------------------------- which column is which


def _guess(tmp_path, text: str, name: str = "train.csv") -> ColumnGuess:
    columns, rows = peek_rows(write(tmp_path / name, text))
    return guess_columns(columns, rows)


def test_question_passage_label_is_guessed_as_a_pair(tmp_path):
    g = _guess(tmp_path, "question,passage,label\nis it wet,water is wet,yes\nis it dry,sand is dry,no\n")
    assert g == ColumnGuess(("question", "passage"), "label", ("text", "label"))
    assert g.describe() == "text = question + passage (a sentence pair), label = label"


def test_two_unnamed_text_columns_make_a_pair_in_file_order(tmp_path):
    g = _guess(tmp_path, "id\tclaim\tevidence\ttarget\n1\tthe sky is green\ta photo of a blue sky\t0\n", "train.tsv")
    assert g.text == ("claim", "evidence") and g.label == "target"


def test_no_label_column_never_reuses_a_text_column(tmp_path):
    train = write(tmp_path / "train.csv", "question,passage\nis it wet,water is wet\nis it dry,sand is dry\n")
    columns, rows = peek_rows(train)
    g = guess_columns(columns, rows)
    assert g.text == ("question", "passage") and g.label is None
    message = raises_data_error(
        lambda: resolve_columns(DataConfig(kind="files", train=str(train), dev=str(train))),
        "train.csv",
        "labels",
        "question, passage",
        "--label-column",
    )
    assert "row" not in message  # the error is about the missing column, not about label values


def test_label_found_by_values_when_not_named(tmp_path):
    g = _guess(tmp_path, "id,review,sentiment\n1,a fine film,positive\n2,a dull film,negative\n3,so so,neutral\n")
    assert g.text == ("review",) and g.label == "sentiment" and g.guessed == ("text", "label")


def test_named_text_column_with_one_word_values(tmp_path):
    g = _guess(tmp_path, "id,text,label\n1,good,pos\n2,bad,neg\n")
    assert g.text == ("text",) and g.label == "label"


def test_numbers_are_never_text(tmp_path):
    g = _guess(tmp_path, "sentence,year,label\nthe cat sat,1999,1\nthe dog ran,2001,0\n")
    assert g.text == ("sentence",) and g.label == "label"


def test_given_columns_are_kept_and_the_rest_guessed(tmp_path):
    columns, rows = peek_rows(write(tmp_path / "t.jsonl", '{"q": "is it", "p": "it is", "gold_label": "yes"}\n'))
    g = guess_columns(columns, rows, text_columns=("q", "p"))
    assert g.text == ("q", "p") and g.label == "gold_label" and g.guessed == ("label",)


def test_a_column_plays_one_role(tmp_path):
    with pytest.raises(ConfigError, match="both text and label"):
        check_roles(("question",), "question")
    with pytest.raises(ConfigError, match="picked twice"):
        check_roles(("text", "Text"), "label")
    train = write(tmp_path / "train.csv", "sentence,label\na b,1\n")
    cfg = DataConfig(kind="files", train=str(train), dev=str(train), text_columns=("label",), label_column="label")
    with pytest.raises(ConfigError, match="both text and label"):
        load_task_data(cfg)


def test_loader_reports_what_it_guessed(tmp_path):
    train = write(
        tmp_path / "train.csv", "question,passage,label\nis it wet,water is wet,yes\nis it dry,sand is dry,no\n"
    )
    task = load_task_data(DataConfig(kind="files", train=str(train), dev=str(train)))
    assert task.train.text_b == ["water is wet", "sand is dry"]
    assert task.columns.text == ("question", "passage") and set(task.columns.guessed) == {"text", "label"}


# --------------------------------------------------------------------------- layering


def test_data_modules_import_no_torch_or_transformers():
    """The studio reads files and guesses columns through core.data: importing any of its modules must not pull
    torch or transformers in (batching imports torch only when it makes tensors)."""
    import subprocess
    import sys

    modules = ["readers", "tables", "columns", "glue", "hub", "task", "encoding", "batching"]
    code = (
        "import sys\n"
        + "".join(f"import dynastudio.core.data.{m}\n" for m in modules)
        + "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
