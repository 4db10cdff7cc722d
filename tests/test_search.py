"""Searched shapes: ArchSpec slicing and extraction, the per-layer shape table, the search job and its errors,
searched points in the grid and in exports, and the depth stage's sandwich shapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dynastudio.core import jobs
from dynastudio.core.config import ProjectConfig
from dynastudio.core.data.tables import split_heldout
from dynastudio.core.data.task import load_task_data
from dynastudio.core.dynamic import (
    ArchSpec,
    SubnetSpec,
    forward_subnet,
    kept_layers,
    layer_plan,
    layer_targets,
    spec_from_json,
    spec_targets,
    spec_to_json,
    subnet_size,
)
from dynastudio.core.errors import Cancelled, ConfigError, ProjectError
from dynastudio.core.events import EventLog, LogMessage, StopToken
from dynastudio.core.extract import extract_from_model
from dynastudio.core.prepare import new_project, split_rows, unused_train_rows
from dynastudio.core.project import Project
from dynastudio.core.search import SEARCH_FILE, STATE_FILE, Space, as_arch, check_budget
from dynastudio.core.store.devices import import_device_latency
from dynastudio.core.store.shapes import BASE_LABEL, ShapeTable, shape_label, shape_table
from helpers import make_tiny_model_dir, tiny_model, tiny_project_config

FAST = dict(runs=5, warmup=1)


def _ids(n=3, t=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, tiny_model().config.vocab_size, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


# ---- ArchSpec ------------------------------------------------------------------------------------
def test_a_uniform_archspec_is_its_grid_cell():
    model = tiny_model()
    ids, mask = _ids()
    for w, d in [(1.0, 1.0), (0.5, 0.5), (0.75, 0.75)]:
        cell = SubnetSpec(w, d)
        arch = as_arch(model.config, cell, "paper")
        a = forward_subnet(model, ids, mask, spec=cell, depth_rule="paper").logits
        b = forward_subnet(model, ids, mask, spec=arch, depth_rule="paper").logits
        assert torch.equal(a, b)
        assert subnet_size(model.config, cell, "paper") == subnet_size(model.config, arch, "paper")
        assert spec_targets(arch, 4, "paper") == layer_targets(4, d, "paper")
        assert spec_targets(arch, 4, "keep-last") == list(arch.layers)


def test_a_mixed_shape_extracts_to_a_slim_model_with_the_same_logits():
    model = tiny_model()
    arch = ArchSpec((0, 1, 3), (4, 1, 2), (64, 16, 40))
    ids, mask = _ids()
    dyn = forward_subnet(model, ids, mask, spec=arch).logits
    slim = extract_from_model(model, arch)
    assert slim.config.heads_per_layer == [4, 1, 2] and slim.config.ffn_per_layer == [64, 16, 40]
    assert slim.config.source["searched"] == arch.to_json() and slim.config.source["kept_layers"] == [0, 1, 3]
    torch.testing.assert_close(slim(ids, mask), dyn, atol=1e-5, rtol=1e-5)
    size = subnet_size(model.config, arch, "paper")
    assert size["encoder_params"] == sum(
        p.numel() for n, p in slim.named_parameters() if "pooler" not in n and "classifier" not in n
    )
    assert spec_from_json(spec_to_json(arch)) == arch and spec_from_json([0.5, 1.0]) == SubnetSpec(0.5, 1.0)


def test_a_shape_that_does_not_fit_the_model_is_one_line():
    model = tiny_model()
    with pytest.raises(ConfigError, match="layer 1: 5 heads"):
        extract_from_model(model, ArchSpec((0, 1), (4, 5), (64, 64)))
    with pytest.raises(ConfigError, match="distinct layer indices from 0 to 3"):
        extract_from_model(model, ArchSpec((2, 1), (4, 4), (64, 64)))


# ---- the shape table -----------------------------------------------------------------------------
def _table_rows(base=1.0, per=None, L=4):
    per = per or {(2, 32): 0.5, (2, 64): 0.75, (4, 32): 1.0, (4, 64): 1.5}
    rows = [{"label": BASE_LABEL, "values": {"latency_fp32_ms": base}}]
    rows += [{"label": shape_label(h, n), "values": {"latency_fp32_ms": base + L * v}} for (h, n), v in per.items()]
    return rows


def test_the_table_predicts_base_plus_each_layer_and_interpolates_between_counts():
    t = ShapeTable.from_rows(_table_rows(), "fp32", 4)
    assert t is not None and t.base_ms == 1.0
    assert t.layer_ms[(4, 64)] == pytest.approx(1.5)
    assert t.predict([4, 2], [64, 32]) == pytest.approx(1.0 + 1.5 + 0.5)
    assert t.layer(3, 48) == pytest.approx((0.5 + 0.75 + 1.0 + 1.5) / 4)  # the middle of the four
    assert t.layer(1, 16) == pytest.approx(0.5)  # below the timed counts: the smallest's
    assert ShapeTable.from_rows(_table_rows()[1:], "fp32", 4) is None  # no base
    assert ShapeTable.from_rows(_table_rows(), "int8", 4) is None  # no int8 figures


# ---- a project to search -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searchable(tmp_path_factory, tiny_task_files) -> Project:
    return make_searchable(tmp_path_factory.mktemp("search"), *tiny_task_files)


def make_searchable(root: Path, train: Path, dev: Path) -> Project:
    """A tiny project whose stages up to depth are marked done (a random model stands for the trained one), with
    max_train_examples leaving train rows out, and its shape table timed on this machine."""
    cfg = tiny_project_config(
        make_tiny_model_dir(root / "model"),
        train,
        dev,
        width_mults=(1.0, 0.5),
        depth_mults=(1.0, 0.5),
        max_train_examples=100,
    )
    p = new_project(root / "proj", cfg)
    p.save_model("teacher", tiny_model(seed=11))
    p.mark_done("finetune", {})
    jobs.run("rewire", p)
    for stage in ("width", "depth"):
        p.save_model(stage, p.load_model("rewired"))
        p.mark_done(stage, {})
    jobs.run("evaluate", p)
    jobs.run("latency", p, jobs.LatencyRequest(**FAST))
    jobs.run("latency", p, jobs.LatencyRequest(shapes=True, **FAST))
    return Project.open(p.root)


def _copy(p: Project, dest: Path) -> Project:
    shutil.copytree(p.root, dest)
    return Project.open(dest)


def test_the_shape_table_is_timed_beside_the_grid(searchable):
    lat = searchable.load_latency()
    assert len(lat["rows"]) == 4  # the grid's cells stay
    labels = [r["label"] for r in lat["shapes"]["rows"]]
    assert labels == [BASE_LABEL] + [shape_label(h, n) for h in (2, 4) for n in (32, 64)]
    assert lat["shapes"]["layers"] == 4
    t = shape_table(lat, None, "fp32")
    assert t is not None and set(t.layer_ms) == {(2, 32), (2, 64), (4, 32), (4, 64)}
    grid = searchable.grid()
    assert all(r.kind == "cell" for r in grid.rows) and len(grid.rows) == 4  # the shapes are not grid rows


def test_search_rows_are_train_rows_no_stage_trains_on(searchable):
    from collections import Counter

    cfg = searchable.config
    task = load_task_data(cfg.data)
    splits = split_rows(task, cfg.train)
    left = unused_train_rows(task, cfg.train, 1000)
    assert left is not None
    train_all, held = split_heldout(task.train, min(cfg.train.importance_examples, len(task.train) // 10), 0)
    assert Counter(splits["heldout"].text_a) == Counter(held.text_a)
    # the training rows and the left-over rows are the rest of the file exactly: no row in both
    assert Counter(splits["train"].text_a) + Counter(left.text_a) == Counter(train_all.text_a)
    assert len(left) == len(train_all) - cfg.train.max_train_examples > 0
    assert len(unused_train_rows(task, cfg.train, 5)) == 5
    assert unused_train_rows(task, ProjectConfig(model="m").train, 5) is None  # every train row is used


def _search(p: Project, budget: float, events=None, stop=None, **kw):
    return jobs.run(
        "search",
        p,
        jobs.SearchRequest(budget, generations=3, population=6, rows=60, **kw),
        events or (lambda e: None),
        stop,
    )


def test_the_search_keeps_the_best_shape_within_the_budget(searchable, tmp_path):
    p = _copy(searchable, tmp_path / "p")
    table = shape_table(p.load_latency(), None, "fp32")
    cells = {r.label: r.latency_ms("fp32") for r in p.grid().rows}
    budget = cells["w0.5_d1"]
    seen = EventLog()
    out = _search(p, budget, seen)
    assert "left out by max_train_examples" in out["rows"]
    chosen = next(x for x in out["points"] if x["label"] == out["chosen"])
    assert chosen["predicted_fp32_ms"] <= budget
    # timed for real: kept because it fits, or (timings drift) the best with a warning that says so
    if out["chosen_fits_measured"]:
        assert chosen["latency_fp32_ms"] <= budget
        assert all(
            c["measured_ms"] > budget
            for c in out["predictor_check"][
                : out["predictor_check"].index(next(c for c in out["predictor_check"] if c["label"] == chosen["label"]))
            ]
        )
    else:
        assert any("none of the best" in e.text for e in seen.of(LogMessage))
    assert table.predict(chosen["searched"]["heads"], chosen["searched"]["neurons"]) == pytest.approx(
        chosen["predicted_fp32_ms"]
    )
    assert out["predictor_check"] and all(c["measured_ms"] > 0 for c in out["predictor_check"])
    # the dev score reported is the sub-network's own
    from dynastudio.core.evaluate import evaluate_specs
    from dynastudio.core.prepare import prepare_inputs

    arch = ArchSpec.from_json(chosen["searched"])
    dev = evaluate_specs(prepare_inputs(p), p.load_model("depth"), [arch])[arch.label]["score"]
    assert chosen["value"] == pytest.approx(dev)
    # the points join the grid as their own kind
    rows = {r.label: r for r in p.grid().rows}
    assert rows[chosen["label"]].kind == "searched" and rows[chosen["label"]].searched == chosen["searched"]
    assert rows[chosen["label"]].latency_ms("fp32") == chosen["latency_fp32_ms"]
    assert not (p.root / STATE_FILE).exists()
    assert any("generation 3/3" in e.text for e in seen.of(LogMessage))


def test_dev_chooses_nothing_flipped_dev_labels_give_the_same_search(searchable, tmp_path, tiny_task_files):
    train, dev = tiny_task_files
    lines = dev.read_text(encoding="utf-8").splitlines()
    flipped = tmp_path / "dev_flipped.tsv"
    flip = {"0": "1", "1": "0"}
    flipped.write_text(
        "\n".join([lines[0]] + [f"{t.rsplit(chr(9), 1)[0]}\t{flip[t.rsplit(chr(9), 1)[1]]}" for t in lines[1:]]) + "\n",
        encoding="utf-8",
    )
    other = make_searchable(tmp_path / "other", train, flipped)
    shutil.copy2(searchable.root / "latency.json", other.root / "latency.json")  # the same timings: ties break alike
    a = _search(_copy(searchable, tmp_path / "a"), 1e9, measure=False)
    b = _search(other, 1e9, measure=False)
    assert a["chosen"] == b["chosen"] and a["history"] == b["history"]  # chosen on the same train rows
    dev_a = {x["label"]: x["value"] for x in a["points"]}
    dev_b = {x["label"]: x["value"] for x in b["points"]}
    assert dev_a.keys() == dev_b.keys()
    assert all(dev_b[k] == pytest.approx(1 - dev_a[k]) for k in dev_a)  # dev was only reported


def test_a_budget_only_the_smallest_cell_fits_still_searches(searchable, tmp_path):
    p = _copy(searchable, tmp_path / "p")
    lat = p.load_latency()  # a table with clear costs (a tiny model's timings barely tell its shapes apart)
    lat["shapes"]["rows"] = _table_rows()
    p.save_latency(lat)
    out = _search(p, 2.0001, measure=False)
    chosen = next(x for x in out["points"] if x["label"] == out["chosen"])
    layers = kept_layers(4, 0.5, p.config.train.depth_rule)
    assert chosen["searched"] == {"layers": layers, "heads": [2, 2], "neurons": [32, 32]}
    assert chosen["cell"] == "w0.5_d0.5"


def test_when_no_finalist_measures_within_the_budget_the_best_is_kept_with_a_warning(searchable, tmp_path, monkeypatch):
    from dynastudio.core import search

    p = _copy(searchable, tmp_path / "p")
    slow = lambda project, specs, precision, stop: {a.label: {"latency_fp32_ms": 1e12} for a in specs}  # noqa: E731
    monkeypatch.setattr(search, "_time_specs", slow)
    seen = EventLog()
    out = _search(p, 1e9, seen)
    assert not out["chosen_fits_measured"]
    warned = [e for e in seen.of(LogMessage) if "none of the best" in e.text]
    assert warned and warned[0].level == "warning" and out["chosen"] in warned[0].text
    checked = out["predictor_check"]
    assert checked[0]["label"] == out["chosen"]  # the best by held-out score, timed first
    scores = [next(x["search_score"] for x in out["points"] if x["label"] == out["chosen"])]
    assert scores[0] == max(x["search_score"] for x in out["points"])


def test_a_stopped_search_resumes_to_the_same_result(searchable, tmp_path):
    whole = _search(_copy(searchable, tmp_path / "a"), 1e9, measure=False)
    p = _copy(searchable, tmp_path / "b")
    stop = StopToken()

    def sink(e):
        if isinstance(e, LogMessage) and "generation 1/3" in e.text:
            stop.set()

    with pytest.raises(Cancelled):
        _search(p, 1e9, sink, stop, measure=False)
    assert (p.root / STATE_FILE).is_file() and not (p.root / SEARCH_FILE).exists()
    seen = EventLog()
    again = _search(p, 1e9, seen, measure=False)
    assert any("resuming the search at generation 2" in e.text for e in seen.of(LogMessage))
    assert again["chosen"] == whole["chosen"] and again["scored"] == whole["scored"]
    assert again["history"] == whole["history"]


def test_bad_searches_are_one_line(searchable, tmp_path, tiny_task_files):
    p = _copy(searchable, tmp_path / "p")
    table = shape_table(p.load_latency(), None, "fp32")
    fastest = table.base_ms + 2 * min(table.layer_ms.values())
    with pytest.raises(ConfigError, match=f"smallest sub-network of the search space takes about {fastest:.2f} ms"):
        _search(p, fastest * 0.5)
    with pytest.raises(ProjectError, match="device-kit .* --shapes"):
        _search(p, 10.0, device="my-board")
    state = json.loads((p.root / "state.json").read_text())
    state["stages"]["depth"]["done"] = False
    (p.root / "state.json").write_text(json.dumps(state))
    with pytest.raises(ProjectError, match="depth stage is not: run `dynastudio run .* --until depth`"):
        _search(Project.open(p.root), 10.0)


def test_a_search_here_times_the_missing_shapes_first_and_keeps_the_others(searchable, tmp_path):
    p = _copy(searchable, tmp_path / "p")
    seen = EventLog()
    out = _search(p, 1e9, seen, precision="int8")
    assert any("timing the int8 layer shapes on this machine first" in e.text for e in seen.of(LogMessage))
    lat = p.load_latency()
    assert shape_table(lat, None, "int8") is not None and shape_table(lat, None, "fp32") is not None
    chosen = next(x for x in out["points"] if x["label"] == out["chosen"])
    assert chosen["latency_int8_ms"] > 0 and "predicted_int8_ms" in chosen


def test_the_cli_searches_reports_and_exports_a_searched_point(searchable, tmp_path, cli):
    p = _copy(searchable, tmp_path / "p")
    budget = {r.label: r.latency_ms("fp32") for r in p.grid().rows}["w1_d0.5"]
    r = cli(
        "search", str(p.root), "--budget-ms", f"{budget}", "--generations", "2", "--population", "5", "--rows", "50"
    )
    assert r.returncode == 0, r.stderr
    label = json.loads((p.root / SEARCH_FILE).read_text())["runs"][0]["chosen"]
    assert f"best within {budget:g} ms: {label}" in r.stdout
    rep = cli("report", str(p.root))
    assert "searched by `dynastudio search`" in rep.stdout and label in rep.stdout
    out = tmp_path / "exp"
    ex = cli("export", str(p.root), "--searched", label, "--format", "onnx", "--out", str(out))
    assert ex.returncode == 0, ex.stderr
    v = json.loads((out / "verification.json").read_text())
    assert v["passed"] and v["subnet"]["label"] == label and v["subnet"]["searched"]["layers"]
    assert f"sub-network {label} (searched)" in (out / "README.md").read_text()
    bad = cli("export", str(p.root), "--searched", "s9L-000000", "--format", "onnx", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "no searched point has that label" in bad.stderr
    both = cli("export", str(p.root), "--searched", label, "--width", "1", "--format", "onnx", "--out", str(out))
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_device_kit_times_the_shapes_and_the_import_files_them(searchable, tmp_path):
    import subprocess
    import sys

    p = _copy(searchable, tmp_path / "p")
    kit = tmp_path / "kit"
    jobs.run("device-kit", p, jobs.DeviceKitRequest(str(kit), cells=((1.0, 1.0),), formats=("fp32",), shapes=True))
    meta = json.loads((kit / "kit.json").read_text())
    assert meta["shape_layers"] == 4 and BASE_LABEL in [c["label"] for c in meta["cells"]]
    res = tmp_path / "board.json"
    subprocess.run(
        [
            sys.executable,
            str(kit / "run_kit.py"),
            "--device",
            "board",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--out",
            str(res),
        ],
        check=True,
        capture_output=True,
    )
    assert import_device_latency(p, res) == "board"
    lat = p.load_latency()
    assert [r["label"] for r in lat["devices"]["board"]["rows"]] == ["w1_d1"]  # the shapes are not cells
    table = shape_table(lat, "board", "fp32")
    assert table is not None and len(table.layer_ms) == 4
    out = _search(p, 1e9, device="board")
    assert out["device"] == "board" and out["predictor_check"] == []  # nothing timed here for a device
    rows = {r.label: r for r in p.grid(device="board").rows}
    chosen = rows[out["chosen"]]
    assert chosen.kind == "searched" and chosen.latency_predicted
    assert chosen.latency_ms("fp32") == pytest.approx(
        table.predict(chosen.searched["heads"], chosen.searched["neurons"])
    )
    assert out["chosen"] not in {r.label for r in p.grid().rows}  # a device's search is not this machine's point


# ---- the sandwich shapes of the depth stage --------------------------------------------------------
def test_sandwich_shapes_are_drawn_from_the_space_the_same_for_a_step():
    from dynastudio.core.config import profile_config
    from dynastudio.core.stages import SandwichSampler

    model = tiny_model()
    t = profile_config("quick", width_mults=(1.0, 0.5), depth_mults=(1.0, 0.5), sandwich=3)
    draw = SandwichSampler(model.config, t, 3)
    space = Space.of(model.config, t)
    a, b, c = draw(5), draw(5), draw(6)
    assert a == b and a != c and len(a) == 3 and len({x.label for x in a}) == 3
    for x in a + c:
        assert x.layers in space.depths and set(x.heads) <= {2, 4} and set(x.neurons) <= {32, 64}
    with pytest.raises(ConfigError, match="train.sandwich"):
        profile_config("quick", sandwich=-1)
    assert ProjectConfig.from_json(json.dumps({"schema_version": 4, "model": "m"})).train.sandwich == 0


def test_the_depth_stage_trains_sandwich_shapes_beside_the_cells(tmp_path, tiny_task_files, tiny_model_dir):
    from dynastudio.core.events import StepEnded

    cfg = tiny_project_config(
        tiny_model_dir, *tiny_task_files, width_mults=(1.0, 0.5), depth_mults=(1.0, 0.5), sandwich=2, teacher_epochs=1
    )
    p = new_project(tmp_path / "p", cfg)
    seen = EventLog()
    jobs.run("run", p, jobs.RunRequest(until="depth"), seen)
    depth_steps = [e for e in seen.of(StepEnded) if e.stage == "depth"]
    assert depth_steps and all("sampled" in e.losses and len(e.losses) == 5 for e in depth_steps)
    assert all("sampled" not in e.losses for e in seen.of(StepEnded) if e.stage == "width")
    assert Project.open(p.root).stage_info("depth")["sandwich"] == 2


def test_check_budget_names_the_smallest_latency():
    t = ShapeTable.from_rows(_table_rows(), "fp32", 4)
    space = Space(((0, 2), (0, 1, 2, 3)), (2, 4), (32, 64))
    check_budget(t, space, jobs.SearchRequest(2.0), "this machine")
    with pytest.raises(ConfigError, match="takes about 2.00 ms"):
        check_budget(t, space, jobs.SearchRequest(1.5), "this machine")
    assert kept_layers(4, 0.5, "paper") == [0, 2] and layer_plan(tiny_model().config, SubnetSpec(0.5, 0.5), "paper")
    assert np.isfinite(t.smallest(2))
