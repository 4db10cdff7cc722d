"""Real-world data files as users make them, and fuzzed ones: each is loaded as the user means it, or refused with
a DataError (one line naming the file and line); never a traceback."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynastudio.core.config import DataConfig
from dynastudio.core.data.readers import MAX_TEXT_CHARS
from dynastudio.core.data.task import load_task_data
from dynastudio.core.errors import DataError, UserError

ROWS = [("a good film", 1), ("a bad film", 0), ("great acting", 1), ("dull plot", 0)]


def _tsv(rows=ROWS, header="sentence\tlabel") -> str:
    return header + "\n" + "".join(f"{s}\t{l}\n" for s, l in rows)


def _csv(rows=ROWS, header="sentence,label") -> str:
    return header + "\n" + "".join(f'"{s}",{l}\n' for s, l in rows)


# name -> (file bytes, what must happen: "loaded" plus checks, or the error's words)
ODD_FILES = {
    "UTF-8 with a byte-order mark (Excel)": ("a.tsv", ("\ufeff" + _tsv()).encode(), "loaded"),
    "UTF-16 with a byte-order mark (spreadsheet 'Unicode text')": ("a.tsv", _tsv().encode("utf-16"), "loaded"),
    "Windows line ends (CRLF)": ("a.csv", _csv().replace("\n", "\r\n").encode(), "loaded"),
    "quoted multi-line cells": ("a.csv", b'sentence,label\n"a good\nfilm",1\n"bad",0\n"great",1\n"dull",0\n', "loaded"),
    "quoted labels": ("a.csv", b'sentence,label\n"a good film","1"\n"a bad film","0"\n', "loaded"),
    "labels written 1.0 / 0.0": ("a.tsv", b"sentence\tlabel\na\t1.0\nb\t0.0\nc\t1\n", "loaded"),
    "string labels": ("a.csv", b"text,label\na good film,pos\na bad film,neg\n", "loaded"),
    "a trailing delimiter on every line": (
        "a.csv",
        ("sentence,label,\n" + "".join(f"{s},{l},\n" for s, l in ROWS)).encode(),
        "loaded",
    ),
    "empty text cells": ("a.tsv", _tsv([("", 1), ("bad", 0), ("ok", 1), ("no", 0)]).encode(), "loaded"),
    "a NUL byte inside a text": ("a.tsv", _tsv().encode().replace(b"good", b"go\x00od"), "loaded"),
    "a 2 MB text cell (cut to MAX_TEXT_CHARS)": (
        "a.tsv",
        ("sentence\tlabel\n" + "x" * 2_000_000 + "\t1\nb\t0\n").encode(),
        "loaded",
    ),
    "a 2 MB quoted CSV cell": ("a.csv", ('sentence,label\n"' + "y" * 2_000_000 + '",1\nb,0\n').encode(), "loaded"),
    "duplicate column names": (
        "a.csv",
        b"sentence,sentence,label\nx,y,1\na,b,0\n",
        "names more than one column 'sentence'",
    ),
    "a label column with one class": (
        "a.tsv",
        _tsv([(s, 1) for s, _ in ROWS]).encode(),
        "a classifier needs at least 2 different labels",
    ),
    "NaN in a regression label": ("a.tsv", b"sentence\tlabel\na\t0.5\nb\tnan\nc\t1.5\n", "line 3 has label 'nan'"),
    "inf in a regression label": ("a.tsv", b"sentence\tlabel\na\t0.5\nb\t2.5\nc\tinf\n", "line 4 has label 'inf'"),
    "Latin-1 bytes": (
        "a.csv",
        "sentence,label\ncaf\xe9 good,1\nbad,0\n".encode("latin-1"),
        "line 2 is not valid UTF-8",
    ),
    "semicolon-separated .csv": ("a.csv", b"sentence;label\na good film;1\na bad film;0\n", "cannot tell which column"),
    "a header and no rows": ("a.csv", b"sentence,label\n", "cannot tell which column holds the text"),
    "an empty file": ("a.csv", b"", "the file is empty"),
    "a JSON array instead of JSON Lines": (
        "a.jsonl",
        json.dumps([{"text": "a", "label": 1}]).encode(),
        "not a JSON object",
    ),
    "a JSONL line without the text key": (
        "a.jsonl",
        b'{"text": "a", "label": 1}\n{"label": 0}\n',
        "line 2 has no key 'text'",
    ),
    "JSONL nested 100,000 deep": (
        "a.jsonl",
        ('{"text": ' + "[" * 100000 + "]" * 100000 + ', "label": 1}\n').encode(),
        "nested too deeply",
    ),
    "tabs inside a TSV text": ("a.tsv", b"sentence\tlabel\na\tgood\tfilm\t1\nb\t0\n", "remove tabs inside the text"),
    "a 200 KB header only": (
        "a.csv",
        (",".join(f"col{i}" for i in range(30000)) + "\n").encode(),
        "cannot tell which column",
    ),
}


@pytest.mark.parametrize("kind", list(ODD_FILES))
def test_odd_real_world_files(tmp_path, kind):
    name, data, outcome = ODD_FILES[kind]
    f = tmp_path / name
    f.write_bytes(data)
    cfg = DataConfig(kind="files", train=str(f), dev=str(f))
    if outcome == "loaded":
        task = load_task_data(cfg)
        assert len(task.train) >= 2 and all(len(t) <= MAX_TEXT_CHARS for t in task.train.text_a)
        assert task.num_labels >= 1
        if "UTF" in kind or "CRLF" in kind:
            assert task.train.text_a[0] == "a good film" and task.label_names == ("0", "1")
        if "multi-line" in kind:
            assert task.train.text_a[0] == "a good\nfilm"
        return
    with pytest.raises(DataError) as info:
        load_task_data(cfg)
    msg = str(info.value)
    assert outcome in msg and str(f) in msg and "\n" not in msg and len(msg) < 600, msg


def test_dev_labels_the_train_file_lacks_are_named(tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text(_tsv())
    dev.write_text("sentence\tlabel\nfine\t1\nodd\t7\n")
    with pytest.raises(DataError, match=r"dev.tsv: line 3 has label '7', which the training data does not have"):
        load_task_data(DataConfig(kind="files", train=str(train), dev=str(dev)))


def test_a_looping_symlink_is_one_line(tmp_path):
    os.symlink(tmp_path / "b.tsv", tmp_path / "a.tsv")
    os.symlink(tmp_path / "a.tsv", tmp_path / "b.tsv")
    with pytest.raises(DataError, match="symbolic link that leads nowhere"):
        load_task_data(DataConfig(kind="files", train=str(tmp_path / "a.tsv"), dev=str(tmp_path / "a.tsv")))


# ---- fuzzing ----------------------------------------------------------------------------------------
SEEDS = {
    ".tsv": _tsv().encode(),
    ".csv": (_csv() + '"a ""quoted"" word",1\n').encode(),
    ".jsonl": "".join(json.dumps({"text": s, "label": l}) + "\n" for s, l in ROWS).encode(),
}
PIECES = [
    b"\t",
    b",",
    b'"',
    b"\n",
    b"\r\n",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"nan",
    b"1e309",
    b"label",
    b"sentence",
    b'""',
    b"\xe9",
    b":",
    b"-",
    b"\xff\xfe",
    b" " * 3,
    b"x" * 300_000,
]


@st.composite
def mutated(draw):
    suffix = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[suffix])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate", "utf16"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "insert":
            data[at:at] = draw(st.sampled_from(PIECES) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        elif op == "replace":
            data[at : at + 1] = draw(st.binary(min_size=1, max_size=3))
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data += data[at:]
        elif op == "utf16":
            try:
                data = bytearray(bytes(data).decode("utf-8").encode("utf-16"))
            except UnicodeDecodeError:
                pass
    return suffix, bytes(data)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=mutated())
def test_fuzzed_files_are_loaded_or_refused_never_a_traceback(tmp_path, case):
    suffix, data = case
    f = tmp_path / f"fuzz{suffix}"
    f.write_bytes(data)
    try:
        task = load_task_data(DataConfig(kind="files", train=str(f), dev=str(f)))
    except UserError as exc:
        msg = str(exc)
        assert "\n" not in msg and len(msg) < 1000, msg
    else:
        assert len(task.train) >= 1 and len(task.train) == len(task.train.labels)


def test_a_short_row_under_a_huge_or_multiline_header_is_still_a_one_line_error(tmp_path):
    """Found by the fuzz test above: the error quoted the header's names whole (300,000 characters here), and a
    quoted name may hold a newline."""
    f = tmp_path / "train.csv"
    f.write_text("x" * 300_000 + 'sentence,"la\nbel"\n"a good film",1\n"a\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(kind="files", train=str(f), dev=str(f)))
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 1000, msg[:2000]
    assert "line 4 has 1 field, expected 2" in msg and "300,008 characters" in msg and "la\\nbel" in msg
