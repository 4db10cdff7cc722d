"""The on-disk layer on hand-written project files (no training): task info, the typed grid, the best under a budget,
and `dynastudio report --budget-ms`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dynastudio.core.cli import main
from dynastudio.core.config import ProjectConfig
from dynastudio.core.errors import ConfigError, ProjectError
from dynastudio.core.store import (
    ANY_LATENCY,
    FLOPS_AXIS,
    Figures,
    Grid,
    Point,
    ProjectStore,
    TaskInfo,
    best_under,
    best_under_budget,
    final_model_name,
    grid_points,
    latency_axis,
    pareto_front,
    read_task,
)

# w1_d1 is the best and slowest; w0.5_d1 loses a little in int8; w0.5_d0.5 is the fastest and the worst
EVALUATED = {"w1_d1": 0.90, "w0.5_d1": 0.86, "w0.5_d0.5": 0.80}
HERE = {  # this machine: fp32 and int8 latency (ms), and the INT8 files' own dev accuracy
    "w1_d1": {
        "latency_fp32_ms": 10.0,
        "latency_fp32_p90_ms": 11.0,
        "size_onnx_fp32_mb": 40.0,
        "latency_int8_ms": 5.0,
        "latency_int8_p90_ms": 5.5,
        "size_onnx_int8_mb": 10.0,
        "metric_int8": 0.89,
    },
    "w0.5_d1": {
        "latency_fp32_ms": 6.0,
        "latency_fp32_p90_ms": 6.5,
        "size_onnx_fp32_mb": 25.0,
        "latency_int8_ms": 3.0,
        "latency_int8_p90_ms": 3.3,
        "size_onnx_int8_mb": 6.0,
        "metric_int8": 0.85,
    },
    "w0.5_d0.5": {
        "latency_fp32_ms": 3.5,
        "latency_fp32_p90_ms": 4.0,
        "size_onnx_fp32_mb": 15.0,
        "latency_int8_ms": 2.0,
        "latency_int8_p90_ms": 2.2,
        "size_onnx_int8_mb": 4.0,
        "metric_int8": 0.79,
    },
}
BOARD = {"w1_d1": 40.0, "w0.5_d1": 22.0, "w0.5_d0.5": 12.0}  # a slow board: fp32 only


def _wd(label: str) -> tuple[float, float]:
    w, d = label[1:].split("_d")
    return float(w), float(d)


def write_project(root: Path, evaluated: bool = True, latency: bool = True, board: bool = False) -> Path:
    """A project folder as the engine leaves it after evaluate and latency, written by hand."""
    root.mkdir(parents=True)
    (root / "project.json").write_text(ProjectConfig(name="hand").to_json())
    (root / "task.json").write_text(TaskInfo("sst2", "accuracy", ("negative", "positive"), False, 100, 20).to_json())
    if evaluated:
        rows = [
            {
                "label": k,
                "width_mult": _wd(k)[0],
                "depth_mult": _wd(k)[1],
                "metric": "accuracy",
                "value": v,
                "metrics": {"accuracy": v, "score": v},
                "encoder_params": 1000,
                "total_params": int(2000 * _wd(k)[0]),
                "flops": 1e9,
                "layers": 2,
                "heads": 2,
                "neurons": 8,
                "flops_rel": _wd(k)[0] * _wd(k)[1],
            }
            for k, v in EVALUATED.items()
        ]
        (root / "results.json").write_text(
            json.dumps(
                {
                    "task": "sst2",
                    "metric": "accuracy",
                    "model": "depth",
                    "depth_rule": "paper",
                    "dev_examples": 20,
                    "teacher": {"score": 0.91},
                    "chance": 0.5,
                    "flops_seq_len": 64,
                    "rows": rows,
                }
            )
        )
    lat: dict = {}
    if latency:
        lat = {
            "setup": {
                "device": "Test CPU 9000",
                "threads": 1,
                "batch": 1,
                "seq": 64,
                "runs": 10,
                "runtime": "onnxruntime",
            },
            "rows": [
                {"label": k, "width_mult": _wd(k)[0], "depth_mult": _wd(k)[1], "sizes": {}, "values": v}
                for k, v in HERE.items()
            ],
        }
    if board:
        lat["devices"] = {
            "board": {
                "setup": {"device": "board"},
                "rows": [
                    {"label": k, "width_mult": _wd(k)[0], "depth_mult": _wd(k)[1], "values": {"latency_fp32_ms": ms}}
                    for k, ms in BOARD.items()
                ],
            }
        }
    if lat:
        (root / "latency.json").write_text(json.dumps(lat))
    return root


def test_the_store_loads_no_torch():
    code = (
        "import sys\nimport dynastudio.core.store\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'safetensors', 'numpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_task_info_round_trips_and_says_what_is_wrong(tmp_path):
    root = write_project(tmp_path / "p")
    task = ProjectStore.open(root).task()
    assert task == read_task(root) == TaskInfo("sst2", "accuracy", ("negative", "positive"), False, 100, 20)
    assert task.num_labels == 2 and json.loads(task.to_json())["labels"] == ["negative", "positive"]
    (root / "task.json").write_text("{not json")
    with pytest.raises(ProjectError, match="task.json: corrupted"):
        read_task(root)
    (root / "task.json").unlink()
    with pytest.raises(ProjectError, match="task.json: missing"):
        read_task(root)


def test_grid_rows_are_typed_per_precision_and_device(tmp_path):
    store = ProjectStore.open(write_project(tmp_path / "p", board=True))
    grid = store.grid()
    assert (grid.task, grid.metric, grid.model, grid.chance) == ("sst2", "accuracy", "depth", 0.5)
    assert grid.flops_seq_len == 64
    assert grid.precisions() == ["fp32", "int8"] and grid.devices == ("board",) and grid.device is None
    assert grid.setup["device"] == "Test CPU 9000" and grid.teacher == {"score": 0.91}
    r = grid.row("w0.5_d1")
    assert (r.width_mult, r.depth_mult, r.value, r.total_params, r.flops_rel) == (0.5, 1.0, 0.86, 1000, 0.5)
    assert r.figures("int8") == Figures(3.0, 3.3, 6.0, 0.85) and r.figures("fp16") is None
    assert r.metric_at("fp32") == 0.86 and r.metric_at("int8") == 0.85 and r.latency_ms("fp32") == 6.0
    # a device kit's figures: its own latency, the metric per precision from this machine's files
    on_board = store.grid(device="board")
    assert on_board.device == "board" and on_board.precisions() == ["fp32"] and on_board.where == "device 'board'"
    assert on_board.row("w1_d1").latency_ms("fp32") == 40.0 and on_board.row("w1_d1").figures("int8").metric == 0.89
    with pytest.raises(ProjectError, match="no latency measured on device 'phone' .known: board."):
        store.grid(device="phone")
    # the keys on disk come back as they were written
    assert Figures.from_values(HERE["w1_d1"], "int8").to_values("int8") == {
        k: v for k, v in HERE["w1_d1"].items() if "int8" in k
    }


def test_grid_from_json_keeps_rows_measured_before_evaluate(tmp_path):
    store = ProjectStore.open(write_project(tmp_path / "p", evaluated=False))
    grid = store.grid()
    assert grid.metric is None and {r.label for r in grid.rows} == set(HERE)
    assert all(r.value is None and r.latency_ms("fp32") > 0 for r in grid.rows)
    assert grid_points(grid, ANY_LATENCY) == []  # no dev metric yet: no point to choose
    assert Grid.from_dict(store.load_results()) == grid


def test_points_never_pair_int8_speed_with_fp32_accuracy(tmp_path):
    grid = ProjectStore.open(write_project(tmp_path / "p")).grid()
    int8 = grid_points(grid, latency_axis("int8"))
    assert {(p.label, p.x, p.y) for p in int8} == {
        ("w1_d1", 5.0, 0.89),
        ("w0.5_d1", 3.0, 0.85),
        ("w0.5_d0.5", 2.0, 0.79),
    }
    both = grid_points(grid, ANY_LATENCY)
    assert len(both) == 6 and {p.precision for p in both} == {"fp32", "int8"}
    flops = grid_points(grid, FLOPS_AXIS)
    assert [(p.label, p.x) for p in flops] == [("w1_d1", 1.0), ("w0.5_d1", 0.5), ("w0.5_d0.5", 0.25)]


def test_pareto_front_and_best_under():
    pts = [
        Point("a", "fp32", 1.0, 0.5),
        Point("b", "fp32", 2.0, 0.7),
        Point("c", "fp32", 3.0, 0.6),
        Point("d", "int8", 2.0, 0.7),
        Point("e", "fp32", 4.0, 0.9),
    ]
    assert [p.label for p in pareto_front(pts)] == ["a", "b", "e"]
    assert best_under(pts, 0.5) is None
    assert best_under(pts, 1.0).label == "a"
    assert best_under(pts, 3.5).label == "b"  # b and d tie on both: the first one
    assert best_under(pts, 10).label == "e"


def test_best_under_budget_answers_and_refuses_in_one_line(tmp_path):
    root = write_project(tmp_path / "p", board=True)
    store = ProjectStore.open(root)
    grid = store.grid()
    assert best_under_budget(grid, 5.0) == Point("w1_d1", "int8", 5.0, 0.89)  # INT8 of the full model beats fp32 ones
    assert best_under_budget(grid, 5.0, "fp32") == Point("w0.5_d0.5", "fp32", 3.5, 0.80)
    assert best_under_budget(grid, 100, "fp32").label == "w1_d1"
    assert best_under_budget(store.grid(device="board"), 25).label == "w0.5_d1"
    with pytest.raises(ConfigError, match="nothing fits 1 ms on this machine .Test CPU 9000.: the fastest, w0.5_d0.5"):
        best_under_budget(grid, 1.0)
    with pytest.raises(ProjectError, match="no fp16 latency measured"):
        best_under_budget(grid, 5.0, "fp16")
    with pytest.raises(ConfigError, match="--precision bf16"):
        best_under_budget(grid, 5.0, "bf16")
    bare = ProjectStore.open(write_project(tmp_path / "q", latency=False)).grid()
    with pytest.raises(ProjectError, match="no latency figures yet"):
        best_under_budget(bare, 5.0, root=tmp_path / "q")


def test_report_names_the_best_under_a_budget(tmp_path, capsys):
    root = write_project(tmp_path / "p", board=True)
    assert main(["report", str(root), "--budget-ms", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "best under 5 ms on this machine (Test CPU 9000): w1_d1 in int8 (width 1, depth 1): accuracy 0.8900 at 5.00 ms"
    )
    assert out[1] == f"export it: dynastudio export {root} --width 1 --depth 1 --format onnx-int8 --out FOLDER"
    assert main(["report", str(root), "--budget-ms", "5", "--precision", "fp32", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert (best["label"], best["precision"], best["latency_ms"], best["value"]) == ("w0.5_d0.5", "fp32", 3.5, 0.8)
    assert main(["report", str(root), "--budget-ms", "30", "--device", "board"]) == 0
    assert "on device 'board': w0.5_d1 (width 0.5, depth 1): accuracy 0.8600 at 22.00 ms" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, latency, says",
    [
        (["--budget-ms", "5"], False, "no latency figures yet: measure them with `dynastudio latency"),
        (["--budget-ms", "5", "--device", "phone"], True, "no latency measured on device 'phone'"),
        (["--budget-ms", "0.5"], True, "nothing fits 0.5 ms on this machine (Test CPU 9000): the fastest"),
        (["--budget-ms", "5", "--precision", "fp16"], True, "no fp16 latency measured"),
        (["--precision", "int8"], True, "give --budget-ms too"),
    ],
)
def test_report_budget_errors_are_one_line_exit_2(tmp_path, capsys, args, latency, says):
    root = write_project(tmp_path / "p", latency=latency)
    assert main(["report", str(root), *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith("error: ") and "\n" not in err and says in err, err


def test_report_table_reads_the_typed_grid(tmp_path, capsys):
    root = write_project(tmp_path / "p")
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "task sst2  model depth  depth rule paper  dev rows 20"
    assert out[1] == "teacher (fine-tuned, full): accuracy 91.00"
    head = out[2].split()
    assert head[7:] == ["fp32_ms", "fp32_p90_ms", "int8_ms", "int8_p90_ms", "onnx_fp32_mb", "onnx_int8_mb"]
    assert out[3].split() == [
        "1",
        "1",
        "90.00",
        "1,000",
        "2,000",
        "1.000",
        "10.00",
        "11.00",
        "5.00",
        "5.50",
        "40.0",
        "10.0",
    ]
    assert out[-1].startswith("latency: Test CPU 9000, 1 thread(s), batch 1, seq 64")
    assert main(["report", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ProjectStore.open(root).load_results()


def test_final_model_name_is_the_most_trained_and_refuses_a_lost_one(tmp_path):
    root = write_project(tmp_path / "p")
    store = ProjectStore.open(root)
    with pytest.raises(ProjectError, match="no trained model yet"):
        final_model_name(store)
    for stage, name in (("finetune", "teacher"), ("rewire", "rewired"), ("width", "width")):
        (root / "models" / name).mkdir(parents=True)
        (root / "models" / name / "model.safetensors").write_bytes(b"x")
        if stage == "rewire":
            (root / "importance.safetensors").write_bytes(b"x")
        store.mark_done(stage, {})
    assert final_model_name(ProjectStore.open(root)) == "width"
    (root / "models" / "width" / "model.safetensors").unlink()
    with pytest.raises(ProjectError, match="the width stage's output is missing"):
        final_model_name(ProjectStore.open(root))


@pytest.mark.parametrize("device", [None, "board"])
def test_the_explore_slider_and_report_give_the_same_answer(window, tmp_path, capsys, device):
    """One function answers "the best under a budget" for the Explore page's slider and for `report --budget-ms`."""
    from dynastudio.studio.pages.explore import split_key

    root = write_project(tmp_path / "p", board=True)
    window.state.open_project(root)
    window.go_to("explore")
    page = window.pages["explore"]
    if device is not None:
        page.device_pick.setCurrentIndex(page.device_pick.findData(device))
        page.reload()
    assert page.x_key == (ANY_LATENCY if device is None else latency_axis("fp32"))
    grid = ProjectStore.open(root).grid(device=device)
    for budget in sorted({*page.xs.tolist(), 0.5, 2.5, 4.2, 7.0, 30.0, 100.0}):
        page.plot.budget_line.setValue(budget)  # moving the budget line sets the exact budget (the slider rounds it)
        on_page = split_key(page._plot_labels[page.best]) if page.best is not None else None
        args = ["report", str(root), "--budget-ms", str(budget)] + (["--device", device] if device else [])
        code = main(args)
        said = capsys.readouterr()
        if on_page is None:
            assert code == 2 and "nothing fits" in said.err, budget
            continue
        best = best_under_budget(grid, budget)
        assert code == 0 and on_page == (best.label, best.precision), budget
        assert f": {best.label}" in said.out and f"at {best.x:.2f} ms" in said.out
