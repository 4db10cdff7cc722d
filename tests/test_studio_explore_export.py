"""Explore and Export on hand-made projects (no training): the window keeps its width, another project starts both
pages afresh, the table and legend name the precisions measured, the targets say what they need, export progress."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from dynastudio.core.config import ProjectConfig  # noqa: E402
from dynastudio.core.store import TaskInfo  # noqa: E402

# w1_d1 is the best and slowest; w0.5_d0.5 the fastest; INT8 files with their own dev accuracy
EVALUATED = {"w1_d1": 0.90, "w0.5_d1": 0.86, "w0.5_d0.5": 0.80}
LATENCY = {  # label -> (fp32 ms, int8 ms, int8 accuracy)
    "w1_d1": (10.0, 5.0, 0.89),
    "w0.5_d1": (6.0, 3.0, 0.85),
    "w0.5_d0.5": (3.5, 2.0, 0.79),
}


def _wd(label: str) -> tuple[float, float]:
    w, d = label[1:].split("_d")
    return float(w), float(d)


def write_latency(root: Path, precisions: tuple[str, ...] = ("fp32", "int8")) -> None:
    """latency.json as the latency job leaves it, with `precisions` measured."""
    rows = []
    for k, (fp32, int8, int8_metric) in LATENCY.items():
        values: dict = {"latency_fp32_ms": fp32, "size_onnx_fp32_mb": 40.0 * _wd(k)[0]}
        if "int8" in precisions:
            values.update(latency_int8_ms=int8, size_onnx_int8_mb=10.0 * _wd(k)[0], metric_int8=int8_metric)
        rows.append({"label": k, "width_mult": _wd(k)[0], "depth_mult": _wd(k)[1], "sizes": {}, "values": values})
    setup = {"device": "Test CPU 9000", "threads": 1, "batch": 1, "seq": 64, "runs": 10, "runtime": "onnxruntime"}
    (root / "latency.json").write_text(json.dumps({"setup": setup, "rows": rows}))


def write_project(root: Path, latency: tuple[str, ...] | None = ("fp32", "int8"), scores: dict | None = None) -> Path:
    """A project folder as the engine leaves it after evaluate (and latency when `latency`), written by hand."""
    root.mkdir(parents=True)
    (root / "project.json").write_text(ProjectConfig(name="hand").to_json())
    (root / "task.json").write_text(TaskInfo("sst2", "accuracy", ("negative", "positive"), False, 100, 20).to_json())
    rows = [
        {
            "label": k,
            "width_mult": _wd(k)[0],
            "depth_mult": _wd(k)[1],
            "metric": "accuracy",
            "value": v,
            "metrics": {"accuracy": v},
            "total_params": int(2e7 * _wd(k)[0] * _wd(k)[1]),
            "flops_rel": _wd(k)[0] * _wd(k)[1],
        }
        for k, v in (scores or EVALUATED).items()
    ]
    results = {"task": "sst2", "metric": "accuracy", "chance": 0.5, "flops_seq_len": 64, "rows": rows}
    (root / "results.json").write_text(json.dumps(results))
    if latency:
        write_latency(root, latency)
    return root


class _Point:  # what pyqtgraph hands the hover slot: a spot with its data (the point's key)
    def __init__(self, key: str):
        self.key = key

    def data(self) -> str:
        return self.key


def _pump() -> None:
    for _ in range(3):
        QApplication.processEvents()


def _min_width(window) -> int:
    _pump()
    return window.minimumSizeHint().width()


# ---- bug 1: the window keeps its width ------------------------------------------------------------
def test_hovering_and_measuring_never_widen_the_window(window, tmp_path, monkeypatch):
    root = write_project(tmp_path / "p", latency=None)
    window.state.open_project(root)
    window.go_to("explore")
    window.resize(1280, 800)
    page = window.pages["explore"]
    before, width = _min_width(window), window.width()
    assert width == 1280

    page._on_hovered(None, [_Point("w0.5_d1")], None)
    monkeypatch.setattr(page, "_tip", lambda *_: "a very long detail, " * 60)
    page._on_hovered(None, [_Point("w0.5_d1")], None)
    assert _min_width(window) == before and window.width() == width
    assert page.hover.text().startswith("a very long detail")  # all of it, though the line shows what fits

    # the latency arrives (the table gains columns, the button counts), the budget answer gets longer
    write_latency(root)
    window.state.reload()
    assert page.grid.precisions() == ["fp32", "int8"] and page.measure.text() == "Measure again"
    page.set_budget(2.0)
    assert _min_width(window) == before and window.width() == width
    page.measure.setText("Cancel (12/12 done)")  # what the button says while it measures
    assert _min_width(window) == before and window.width() == width


# ---- bug 4: another project, a fresh start -------------------------------------------------------
def test_opening_another_project_forgets_the_last_ones_selection_hover_and_export(window, tmp_path):
    from dynastudio.core.requests import ExportReport

    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b", latency=None, scores={"w1_d1": 0.7, "w0.5_d1": 0.65, "w0.5_d0.5": 0.6})
    state = window.state
    state.open_project(a)
    window.go_to("explore")
    ep, xp = window.pages["explore"], window.pages["export"]
    state.select("w0.5_d1")
    assert ep.hover.text().startswith("Selected w0.5_d1")
    ep._on_hovered(None, [_Point("w0.5_d1@int8")], None)
    assert "latency fp32: 6.00 ms" in ep.hover.text()
    window.go_to("export")
    assert xp.subnet.currentData() == "w0.5_d1"
    folder = tmp_path / "a" / "exports" / "w0.5_d1-onnx"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * 100)
    xp._on_finished(ExportReport(str(folder), "onnx", "onnx", 0.5, 1.0, 1e-6, None, True, None, 20, 0.1))
    assert xp.status.text().startswith("Exported to") and "verified" in xp.verify.text()

    state.open_project(b)
    assert state.selected is None
    window.go_to("explore")
    assert "w0.5_d1" not in ep.hover.text() and "ms" not in ep.hover.text()
    assert not ep.table.selectedItems() and len(ep.plot.selected_ring.getData()[0]) == 0
    ep._on_hovered(None, [_Point("w0.5_d1")], None)
    assert "latency: not measured" in ep.hover.text() and "0.6500" in ep.hover.text()
    window.go_to("export")
    assert xp.subnet.currentData() is None and not xp.export_button.isEnabled()  # nothing chosen: nothing picked
    assert "Exported to" not in xp.status.text() and xp.verify.text().startswith("No export yet")
    assert xp.files.rowCount() == 0 and not xp.open_folder.isEnabled() and xp.out.text() == ""
    state.select("w1_d1")
    assert xp.subnet.currentData() == "w1_d1" and xp.export_button.isEnabled()
    assert xp.out.text().startswith(str(b))


# ---- bug 7: the hover highlight --------------------------------------------------------------------
def test_a_hovered_point_past_the_budget_line_loses_its_highlight(window, qtbot, tmp_path):
    window.state.open_project(write_project(tmp_path / "p"))
    window.go_to("explore")
    window.resize(1280, 800)
    page = window.pages["explore"]
    qtbot.waitUntil(lambda: page.plot.isVisible(), timeout=2000)
    qtbot.wait(200)  # let the freshly shown chart lay out before mapping points to pixels
    x, y = page.point_for("w1_d1")
    pos = page.plot.mapFromScene(page.plot.getViewBox().mapViewToScene(QPointF(x, y)))
    qtbot.mouseMove(page.plot.viewport(), pos)
    qtbot.waitUntil(lambda: page.plot.scatter.data["hovered"].any(), timeout=2000)
    i = page._plot_labels.index("w1_d1")
    assert page.plot.scatter.data["hovered"][i]
    page.set_budget(4.0)  # w1_d1 (10 ms) is now over the budget: faded, and no longer ringed as hovered
    hovered = page.plot.scatter.data["hovered"]
    assert not hovered[i]


# ---- friction: the precisions, in the table and the legend --------------------------------------
def _headers(table) -> list[str]:
    return [table.horizontalHeaderItem(j).text().replace("\n", " ") for j in range(table.columnCount())]


def test_the_table_and_legend_name_only_the_precisions_measured(window, tmp_path):
    state = window.state
    state.open_project(write_project(tmp_path / "a"))
    window.go_to("explore")
    page = window.pages["explore"]
    headers = _headers(page.table)
    assert {"latency fp32 (ms)", "latency int8 (ms)", "accuracy fp32", "accuracy int8"} <= set(headers)
    page.set_budget(3.0)
    assert "best is w0.5_d1 in int8" in page.budget_text.text()
    row = page.table.row_of("w0.5_d1")
    cells = {headers[j]: page.table.item(row, j).text() for j in range(len(headers))}
    assert cells["latency int8 (ms)"] == "3.00" and cells["accuracy int8"] == "0.8500"
    assert cells["latency fp32 (ms)"] == "6.00" and cells["accuracy fp32"] == "0.8600"
    assert page.table.item(row, headers.index("latency int8 (ms)")).font().bold()  # the answer's figure
    legend = page.encoding.text()
    assert "hollow: INT8" in legend and "fp16" not in legend

    state.open_project(write_project(tmp_path / "b", latency=("fp32",)))
    headers = _headers(page.table)
    assert "latency fp32 (ms)" in headers and "accuracy" in headers and not any("int8" in h for h in headers)
    assert "INT8" not in page.encoding.text() and "fp16" not in page.encoding.text()


# ---- friction: the export targets and the extras they need ---------------------------------------
def test_targets_name_a_missing_extra_with_this_pythons_pip_command(qtbot, monkeypatch):
    import importlib.util

    from dynastudio.core.errors import ConfigError
    from dynastudio.core.export.targets import require_extra
    from dynastudio.studio.pages.export import ExportPage
    from dynastudio.studio.state import StudioState

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    command = f"{sys.executable} -m pip install 'dynabert-studio[openvino]'"
    with pytest.raises(ConfigError) as info:
        require_extra("openvino")
    assert str(info.value).endswith(command) and "\n" not in str(info.value)

    page = ExportPage(StudioState())
    qtbot.addWidget(page)
    texts = {page.target.itemData(i): page.target.itemText(i) for i in range(page.target.count())}
    assert "needs pip install" in texts["intel-cpu"] and "needs" in texts["openvino"]
    assert "needs" not in texts["android"] and "needs" not in texts["ios"]  # coremltools is there
    page.target.setCurrentIndex(page.target.findData("intel-cpu"))
    assert command in page.target_help.text()
    page.target.setCurrentIndex(page.target.findData("android"))
    assert "pip install" not in page.target_help.text()


def test_export_shows_progress_cancels_and_a_failure_clears_the_last_result(window, qtbot, monkeypatch, tmp_path):
    from dynastudio.core.requests import ExportReport
    from dynastudio.studio import errors
    from helpers import register_test_job

    state = window.state
    root = write_project(tmp_path / "p")
    state.open_project(root)
    state.select("w1_d1")
    window.go_to("export")
    xp = window.pages["export"]
    folder = root / "exports" / "done"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * 100)
    xp._on_finished(ExportReport(str(folder), "onnx", "onnx", 1.0, 1.0, 1e-6, None, True, None, 20, 0.1))
    assert "✔ verified" in xp.verify.text() and xp.files.rowCount() == 2 and xp.open_folder.isEnabled()

    # a job that waits for Stop, run in a job child as the export would be: its progress on the page, and a Cancel
    # that stops it (under a name of its own: the real "export" job's checks want a real project)
    register_test_job(monkeypatch, "slow-export", "slow", request_type="ExportRequest")
    register_test_job(monkeypatch, "boom-export", "boom", request_type="ExportRequest")
    fake = {"export": "slow-export"}
    real = state.start_job
    monkeypatch.setattr(state, "start_job", lambda parent, name, *a, **k: real(parent, fake.get(name, name), *a, **k))
    assert not xp.progress.isVisible() and not xp.cancel.isVisible()
    xp.start_export()
    assert xp.progress.isVisible() and xp.cancel.isVisible() and xp.cancel.isEnabled()
    assert "✔" not in xp.verify.text() and xp.files.rowCount() == 0  # the last result is not this one's
    qtbot.waitUntil(lambda: "slow job running" in xp.step.text(), timeout=20000)
    # the status bar says it in words and where Cancel is (it said "export: 1/5")
    from dynastudio.core.events import StageProgress

    xp.handle.bridge.stageProgress.emit(StageProgress("export", 1, 5))
    assert window.job_label.text() == "Exporting (Cancel on the Export page): 1 of 5"
    wide = _min_width(window)
    xp.step.setText("exporting w1_d1 as onnx to /" + "a-long-folder/" * 40)  # a job's line names its folder
    xp.status.setText("Exporting to /" + "a-long-folder/" * 40)
    assert _min_width(window) == wide
    with qtbot.waitSignal(xp.handle.cancelled, timeout=20000):
        qtbot.mouseClick(xp.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not xp.progress.isVisible() and xp.export_button.isEnabled(), timeout=5000)
    assert xp.status.text().startswith("Export stopped")

    # a job that fails: the ✔ of an earlier export must not stay above the failure
    xp._on_finished(ExportReport(str(folder), "onnx", "onnx", 1.0, 1.0, 1e-6, None, True, None, 20, 0.1))
    fake["export"] = "boom-export"
    with qtbot.waitSignal(state.runner.jobEnded, timeout=20000):
        xp.start_export()
    assert xp.status.text().startswith("Export failed")
    assert "✔" not in xp.verify.text() and xp.files.rowCount() == 0 and not xp.open_folder.isEnabled()
    assert not xp.progress.isVisible()
    for box in list(errors.open_dialogs):
        box.done(0)


def test_the_chance_label_keeps_clear_of_the_points_on_explore(window, tmp_path):
    """The demo's smallest sub-network scores just above chance at the left end, where the label sat on it (seen
    in a real window); the label moves to a free spot along the line, off the points and the legend."""
    scores = {"w1_d1": 0.985, "w0.5_d1": 0.98, "w0.25_d1": 0.935, "w1_d0.5": 0.66, "w0.25_d0.5": 0.52}
    root = write_project(tmp_path / "p", latency=None, scores=scores)
    window.resize(1280, 800)
    window.show()
    window.state.open_project(root)
    window.go_to("explore")
    _pump()
    chart = window.pages["explore"].plot
    vb = chart.getViewBox()
    assert chart.chance_line.isVisible()
    box = chart.chance_line.label.sceneBoundingRect()
    xs, ys = chart.scatter.getData()
    assert len(xs) == len(scores)
    for x, y in zip(xs, ys):
        centre = vb.mapViewToScene(QPointF(x, y))
        near = box.adjusted(-5, -5, 5, 5)  # a marker's radius around the text
        assert not near.contains(centre), (x, y)
    assert not box.intersects(chart.legend.sceneBoundingRect())


def test_the_int8_method_is_offered_for_int8_targets_only_and_reaches_the_request(window, tmp_path, monkeypatch):
    from dynastudio.core.requests import INT8_METHODS_BY_FORMAT, ExportReport

    state = window.state
    root = write_project(tmp_path / "p")
    state.open_project(root)
    state.select("w1_d1")
    window.go_to("export")
    xp = window.pages["export"]

    def pick(target: str) -> None:
        xp.target.setCurrentIndex(xp.target.findData(target))

    cases = (("android", "ort-int8"), ("onnx-int8", "onnx-int8"), ("arm-linux", "onnx-int8"), ("openvino-int8", None))
    for target, fmt in (*cases, ("onnx", None), ("ios", None)):
        pick(target)
        methods = INT8_METHODS_BY_FORMAT.get(fmt or target, ())
        assert xp.int8_method.isHidden() is not bool(methods), target
        assert xp.int8_label.isHidden() is not bool(methods), target
        assert [xp.int8_method.itemData(i) for i in range(xp.int8_method.count())] == list(methods), target
        if methods:
            assert xp.int8_method.currentData() == "per-token"  # every INT8 format's default

    seen = []
    monkeypatch.setattr(state, "start_job", lambda parent, name, root, request: seen.append(request))
    pick("android")
    xp.int8_method.setCurrentIndex(xp.int8_method.findData("dynamic"))
    xp.start_export()
    assert seen and seen[-1].int8_method == "dynamic" and seen[-1].target == "android"

    folder = root / "exports" / "int8"
    folder.mkdir(parents=True)
    (folder / "model.ort").write_bytes(b"x" * 100)
    quantization = {
        "path": "post-training",
        "method": "per-token",
        "speed": {"fp32_ms": 9.0, "int8_ms": 4.0, "speedup": 2.25},
    }
    xp._on_finished(
        ExportReport(
            str(folder),
            "ort-int8",
            "android",
            1.0,
            1.0,
            0.01,
            0.995,
            True,
            None,
            872,
            0.1,
            verification={"quantization": quantization},
        )
    )
    text = xp.verify.text()
    assert "INT8: post-training, per-token" in text and "2.25x the fp32 file's speed" in text


# ---- searched shapes on Explore and Export --------------------------------------------------------
SEARCHED = {"layers": [0, 1], "heads": [6, 3], "neurons": [768, 384]}


def write_search(root: Path, device: str | None = None) -> str:
    """search.json as the search job leaves it, with one point (a shape measured at 2.5 ms)."""
    from dynastudio.core.dynamic import ArchSpec

    label = ArchSpec.from_json(SEARCHED).label
    point = {
        "label": label,
        "kind": "searched",
        "searched": SEARCHED,
        "width_mult": 0.375,
        "depth_mult": 0.5,
        "metric": "accuracy",
        "value": 0.83,
        "metrics": {"accuracy": 0.83},
        "search_score": 0.85,
        "predicted_fp32_ms": 2.4,
        "total_params": int(1e7),
        "flops_rel": 0.2,
        "latency_fp32_ms": 2.5,
    }
    run = {"budget_ms": 3.0, "device": device, "precision": "fp32", "chosen": label, "points": [point]}
    (root / "search.json").write_text(json.dumps({"runs": [run]}))
    return label


def test_a_searched_point_is_a_star_with_its_shape_and_exports_by_its_label(window, tmp_path, monkeypatch):
    from dynastudio.studio.style import SEARCHED_COLOUR, SEARCHED_SYMBOL

    state = window.state
    root = write_project(tmp_path / "p")
    label = write_search(root)
    state.open_project(root)
    window.go_to("explore")
    page = window.pages["explore"]
    assert label in page.labels and page.point_for(label) == (2.5, 0.83)
    i = page._plot_labels.index(label)
    assert page._colours[i] == SEARCHED_COLOUR
    assert "dynastudio search" in page.encoding.text() and "★" in page.encoding.text()
    tip = page._tip(0, 0, label)
    assert "searched: layers 0/1; heads 6/3; neurons 768/384" in tip and "latency fp32: 2.50 ms" in tip
    from dynastudio.studio.style import subnet_symbol

    assert subnet_symbol(label) == SEARCHED_SYMBOL and subnet_symbol("w0.5_d1") != SEARCHED_SYMBOL
    # the cells' legend does not count the searched shape's width or depth as a grid value
    assert "0.375" not in page.encoding.text()

    # the search button asks for a search within the budget set, on the device shown
    seen = []
    monkeypatch.setattr(state, "start_job", lambda parent, name, root, request: seen.append((name, request)))
    page.set_budget(6.0)
    assert page.search_budget.value() == pytest.approx(page.plot.budget_line.value(), abs=0.01)
    page.search_budget.setValue(4.0)
    page.search_subnets()
    assert seen[-1][0] == "search" and seen[-1][1].budget_ms == 4.0 and seen[-1][1].device is None

    # selected, it exports as the searched shape, not as width x depth
    state.select(label)
    window.go_to("export")
    xp = window.pages["export"]
    assert xp.subnet.currentData() == label
    xp.target.setCurrentIndex(xp.target.findData("onnx"))
    xp.start_export()
    name, request = seen[-1]
    assert name == "export" and request.searched == label
