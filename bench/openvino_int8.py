"""OpenVINO's own INT8 (the `openvino-int8` export: per-token, its default, with NNCF's INT8 weights and inputs
quantized on the fly by OpenVINO's CPU plugin; and static, NNCF's post-training quantization calibrated on train
rows) against OpenVINO at its default precision (bf16 on a CPU with AVX512-BF16, the `openvino` export), OpenVINO in
fp32, and onnxruntime's fp32 and per-token INT8 files, on a trained project.

For each cell: the three OpenVINO exports are made by the export job itself (so their dev agreement with the PyTorch
fp32 cell is the export's own check; NNCF calibrates on train rows only), then every file is timed side by side in
this one process: 1 thread, batch 1, sequence 128, the files interleaved round by round, median.

    python bench/openvino_int8.py PROJECT_DIR [--cells 1,1 0.5,0.5] [--rounds 5] [--runs 20]
Writes bench/results/openvino_int8.{md,json}. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"

import numpy as np  # noqa: E402

from dynastudio.core.dynamic import SubnetSpec  # noqa: E402
from dynastudio.core.events import StopToken, null_sink  # noqa: E402
from dynastudio.core.export.formats import write_format  # noqa: E402
from dynastudio.core.export.job import export_job  # noqa: E402
from dynastudio.core.export.logits import input_names_for  # noqa: E402
from dynastudio.core.export.runners import ort_session  # noqa: E402
from dynastudio.core.export.runtimes import import_openvino  # noqa: E402
from dynastudio.core.extract import extract_from_model  # noqa: E402
from dynastudio.core.prepare import project_tokenizer  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.requests import ExportRequest  # noqa: E402

# (name, format, --int8-method): OpenVINO at its default precision, its INT8 per token (the default) and static
EXPORTS = (("openvino", "openvino", "per-token"), ("openvino-int8", "openvino-int8", "per-token"))
EXPORTS += (("openvino-int8 static", "openvino-int8", "static"),)


class OpenVino:
    """A compiled OpenVINO model on one thread (the latency job's settings), optionally forced to fp32."""

    def __init__(self, path: Path, f32: bool):
        ov = import_openvino()
        config = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if f32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()

    def run(self, feed: dict) -> None:
        self.request.infer(feed)


class Ort:
    def __init__(self, path: Path):
        self.session = ort_session(path, threads=1)

    def run(self, feed: dict) -> None:
        self.session.run(None, feed)


def timed(runners: dict, feed: dict, rounds: int, runs: int) -> dict[str, float]:
    for r in runners.values():
        for _ in range(3):
            r.run(feed)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                r.run(feed)
                times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project")
    ap.add_argument("--cells", nargs="+", default=["1,1", "0.5,0.5"])
    ap.add_argument("--model", default="depth")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    ov = import_openvino()
    project = Project.open(Path(a.project))
    tok = project_tokenizer(project)
    model = project.load_model(a.model)
    rule = project.config.train.depth_rule
    started, load_before = time.time(), os.getloadavg()
    cells = {}
    with tempfile.TemporaryDirectory(prefix="openvino-int8-") as scratch:
        for c in a.cells:
            spec = SubnetSpec(*(float(x) for x in c.split(",")))
            d = Path(scratch) / spec.label
            checks, files = {}, {}
            for key, fmt, method in EXPORTS:
                out = d / key.replace(" ", "-")
                request = ExportRequest(
                    spec.width_mult, spec.depth_mult, fmt, str(out), model_name=a.model, int8_method=method
                )
                t0 = time.time()
                export_job(project, request, null_sink, StopToken())
                v = json.loads((out / "verification.json").read_text())
                files[key] = out / v["model_file"]
                checks[key] = {
                    "agreement": v["dev"]["agreement"],
                    "metric_change": v["dev"]["exported_score"] - v["dev"]["pytorch_score"],
                    "passed": v["passed"],
                    "export_seconds": round(time.time() - t0, 1),
                    "size_mb": sum(p.stat().st_size for p in out.glob("openvino_model.*")) / 1e6,
                }
            slim = extract_from_model(model, spec, rule)
            names = input_names_for(tok, slim)
            (d / "ort").mkdir()
            fp32 = write_format("onnx", slim, d / "ort", names)
            int8 = write_format("onnx-int8", slim, d / "ort", names, fp32_onnx=fp32)
            g = np.random.default_rng(0)
            ids = g.integers(1000, min(slim.config.vocab_size, 29000), (1, 128))
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            feed = {k: np.asarray(v, np.int64) for k, v in feed.items() if k in names}
            runners = {
                "OpenVINO fp32": OpenVino(files["openvino"], f32=True),
                "OpenVINO default (openvino)": OpenVino(files["openvino"], f32=False),
                "OpenVINO INT8 per-token (openvino-int8)": OpenVino(files["openvino-int8"], f32=False),
                "OpenVINO INT8 static (openvino-int8, --int8-method static)": OpenVino(
                    files["openvino-int8 static"], f32=False
                ),
                "onnxruntime fp32 (onnx)": Ort(fp32),
                "onnxruntime INT8 per-token (onnx-int8)": Ort(int8),
            }
            lat = timed(runners, feed, a.rounds, a.runs)
            cells[spec.label] = {"latency_ms": lat, "checks": checks}
            print(spec.label, json.dumps({k: round(v, 2) for k, v in lat.items()}), json.dumps(checks), flush=True)
    result = {
        "command": "python bench/openvino_int8.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "openvino": ov.get_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started),
        "cells": cells,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "openvino_int8.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# OpenVINO INT8 (per-token and static) against OpenVINO's default precision, fp32 and onnxruntime (bench/openvino_int8.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}, {result['seconds']} s), OpenVINO {result['openvino']}, "
        f"{result['machine']}; load average before {result['load_average_before']}, after "
        f"{result['load_average_after']}. Latency: 1 thread, batch 1, sequence 128, median of {a.rounds} interleaved "
        f"rounds of {a.runs} runs. Agreement: the export job's own check on dev against the PyTorch fp32 cell. "
        "openvino-int8 per-token (the default): NNCF's INT8 weights, inputs quantized on the fly with a range per "
        "token (per hidden-size group of values); static: NNCF's post-training quantization calibrated on 300 train "
        "rows (never dev).",
        "",
        "| cell | runtime and file | latency ms | vs OpenVINO default | vs OpenVINO fp32 |",
        "|---|---|---:|---:|---:|",
    ]
    for label, c in cells.items():
        base, f32 = c["latency_ms"]["OpenVINO default (openvino)"], c["latency_ms"]["OpenVINO fp32"]
        for k, v in c["latency_ms"].items():
            lines.append(f"| {label} | {k} | {v:.2f} | {base / v:.2f}x | {f32 / v:.2f}x |")
    lines += [
        "",
        "| cell | export | dev agreement with fp32 | metric change (points) | passed | size MB | export s |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for label, c in cells.items():
        for fmt, v in c["checks"].items():
            lines.append(
                f"| {label} | {fmt} | {100 * v['agreement']:.2f} % | {100 * v['metric_change']:+.2f} | {v['passed']} | "
                f"{v['size_mb']:.1f} | {v['export_seconds']} |"
            )
    (OUT / "openvino_int8.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
