"""INT8 paths side by side on a trained project: per-token quantization (the export's default since round 8: each
token's input quantized with its own range), onnxruntime dynamic quantization (one range per tensor: the export's
method before round 8), checked in batches of 32 padded rows and one row at a time (as a device runs it); the
`android` export itself (the export job: per-token INT8, trimmed vocabulary, INT8 tables, .ort; its agreement and
metric from its own verification); static QDQ quantization calibrated on train rows (MinMax, Percentile, Entropy), and static
with the sensitivity pass (the few MatMuls that cost the most agreement kept fp32); and dynamic quantization of the
int8-aware stage's weights (quantization-aware distillation), per-token, with how closely its PyTorch emulation
reproduces the file.

For each cell: prediction agreement with the cell's fp32 ONNX file and the change of the task metric on dev (dev
only reports: calibration and the sensitivity pass use train rows), latency with onnxruntime (1 thread, batch 1,
sequence 128, the variants interleaved), and the file size. The lookup tables stay fp32 in every variant here but
`android`; the export compacts them the same way whatever the MatMul method.

    python bench/int8_paths.py PROJECT_DIR [--cells 1,1 0.5,0.5 0.25,0.5 | --cells all] [--paths ...] [--tag NAME]
Writes bench/results/int8_paths[_NAME].{md,json}. Nothing else may run on the machine meanwhile.
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

from dynastudio.core.data.batching import iterate_batches  # noqa: E402
from dynastudio.core.dynamic import SubnetSpec, subnet_grid  # noqa: E402
from dynastudio.core.events import StopToken, null_sink  # noqa: E402
from dynastudio.core.export.calibrate import CALIBRATORS, sensitivity_pass, static_matmuls, train_feeds  # noqa: E402
from dynastudio.core.export.formats import write_format  # noqa: E402
from dynastudio.core.export.job import export_job, int8_runner  # noqa: E402
from dynastudio.core.export.logits import input_names_for  # noqa: E402
from dynastudio.core.export.quantize import dynamic_matmuls, per_token_matmuls  # noqa: E402
from dynastudio.core.export.runners import feed, ort_session  # noqa: E402
from dynastudio.core.extract import extract_from_model  # noqa: E402
from dynastudio.core.metrics import agreement, compute_metric  # noqa: E402
from dynastudio.core.prepare import prepare_inputs, project_tokenizer  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.requests import ExportRequest  # noqa: E402


def dev_logits(path: Path, feeds: list[dict]) -> np.ndarray:
    sess = ort_session(path)
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def latency_ms(paths: dict[str, Path], names: list[str], vocab: int, rounds: int = 5, runs: int = 20) -> dict:
    """Median ms of one batch-1, sequence-128 call per file, 1 thread, the files interleaved round by round."""
    g = np.random.default_rng(0)
    f = {"input_ids": g.integers(1000, min(vocab, 29000), (1, 128)), "attention_mask": np.ones((1, 128), np.int64)}
    if "token_type_ids" in names:
        f["token_type_ids"] = np.zeros((1, 128), np.int64)
    f = {k: np.asarray(v, np.int64) for k, v in f.items() if k in names}
    sessions = {k: ort_session(p, threads=1) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, f)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, f)
                times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


PATHS = ("per-token", "android", "dynamic-batch32", "dynamic", "static", "static+sensitivity", "int8-aware")


def dev_feeds(inputs, names: list[str], pad: int, rows: int) -> list[dict]:
    return [feed(b, names) for b in iterate_batches(inputs.dev, rows, shuffle=False, pad_id=pad)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project")
    ap.add_argument("--cells", nargs="+", default=["1,1", "0.5,0.5", "0.25,0.5"])
    ap.add_argument("--model", default="depth", help="the project's fp32 model to extract from (default: depth)")
    ap.add_argument(
        "--paths",
        default=",".join(PATHS),
        help=f"comma separated, of {', '.join(PATHS)} (int8-aware needs the project's int8-aware stage)",
    )
    ap.add_argument("--calibration-rows", type=int, default=256)
    ap.add_argument("--scoring-rows", type=int, default=512)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    paths_on = [x for x in a.paths.split(",") if x]
    if unknown := set(paths_on) - set(PATHS):
        raise SystemExit(f"--paths: unknown {sorted(unknown)}; choose from {', '.join(PATHS)}")
    project = Project.open(Path(a.project))
    if "int8-aware" in paths_on and not project.has_int8_aware_model():
        raise SystemExit(f"{a.project}: no int8-aware model: run it with `dynastudio run DIR --int8-epochs 1` first")
    inputs = prepare_inputs(project)
    tok = project_tokenizer(project)
    model = project.load_model(a.model)
    aware_model = project.load_model("int8") if "int8-aware" in paths_on else None
    t = project.config.train
    if a.cells == ["all"]:
        specs = subnet_grid(t.width_mults, t.depth_mults)
    else:
        specs = [SubnetSpec(*(float(x) for x in c.split(","))) for c in a.cells]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    y = np.asarray(inputs.dev.labels)
    regression = inputs.task.is_regression
    load_before, started = os.getloadavg(), time.time()
    cells = {}
    with tempfile.TemporaryDirectory(prefix="int8-paths-") as scratch:
        for spec in specs:
            slim = extract_from_model(model, spec, t.depth_rule)
            names = input_names_for(tok, slim)
            d = Path(scratch) / spec.label
            (d / "fp32").mkdir(parents=True)
            fp32 = write_format("onnx", slim, d / "fp32", names)
            batched, one_row = dev_feeds(inputs, names, pad, 32), dev_feeds(inputs, names, pad, 1)
            ref_dev = dev_logits(fp32, batched)
            paths = {"fp32": fp32}
            rows_per_call = {"fp32": 32}
            extra: dict = {}
            if "dynamic-batch32" in paths_on or "dynamic" in paths_on:
                dyn = d / "dynamic.onnx"
                dynamic_matmuls(fp32, dyn, False)
                for k in ("dynamic-batch32", "dynamic"):
                    if k in paths_on:
                        paths[k], rows_per_call[k] = dyn, 32 if k == "dynamic-batch32" else 1
            if "per-token" in paths_on:
                paths["per-token"], rows_per_call["per-token"] = d / "per-token.onnx", 1
                per_token_matmuls(fp32, paths["per-token"], False)
            vocab = slim.config.vocab_size
            if "android" in paths_on:
                shipped = d / "android"
                request = ExportRequest(spec.width_mult, spec.depth_mult, "android", str(shipped), model_name=a.model)
                export_job(project, request, null_sink, StopToken())
                v = json.loads((shipped / "verification.json").read_text())
                paths["android"], rows_per_call["android"] = shipped / v["model_file"], 0  # 0: the export's own check
                extra["android"] = {
                    "agreement": v["dev"]["agreement"],
                    "metric_change": v["dev"]["exported_score"] - v["dev"]["pytorch_score"],
                    "rows_per_call": v["dev"]["rows_per_call"],
                    "passed": v["passed"],
                    "vocabulary": v["vocabulary"]["kept_tokens"] if v.get("vocabulary") else None,
                }
                vocab = min(vocab, json.loads((shipped / "dynabert_config.json").read_text())["vocab_size"])
            if "static" in paths_on or "static+sensitivity" in paths_on:
                cal, scoring = train_feeds(inputs.train, names, pad, a.calibration_rows, a.scoring_rows)
                ref_score = dev_logits(fp32, scoring)
                statics = {}
                for m in CALIBRATORS:
                    statics[m] = d / f"static-{m}.onnx"
                    static_matmuls(fp32, statics[m], False, cal, m)
                    if "static" in paths_on:
                        paths[f"static-{m}"], rows_per_call[f"static-{m}"] = statics[m], 32  # fixed ranges
                # the sensitivity pass on the calibrator that agrees best on the scoring rows (train rows, not dev)
                on_scoring = {
                    m: agreement(dev_logits(statics[m], scoring), ref_score, regression=regression)[0]
                    for m in CALIBRATORS
                }
                extra["scoring_agreement"] = on_scoring
                if "static+sensitivity" in paths_on:
                    best = max(on_scoring, key=lambda k: on_scoring[k])
                    sens = sensitivity_pass(fp32, cal, scoring, ref_score, dev_logits, best, regression=regression)
                    paths["static+sensitivity"] = d / "static-sensitive.onnx"
                    rows_per_call["static+sensitivity"] = 32
                    static_matmuls(fp32, paths["static+sensitivity"], False, cal, best, sens.kept_fp32)
                    extra["sensitivity"] = sens.to_dict()
            if aware_model is not None:
                aware = extract_from_model(aware_model, spec, t.depth_rule)
                (d / "aware").mkdir()
                aware_fp32 = write_format("onnx", aware, d / "aware", names)
                paths["int8-aware"], rows_per_call["int8-aware"] = d / "aware.onnx", 1
                per_token_matmuls(aware_fp32, paths["int8-aware"], False)
                # in batches of 32 padded rows: a per-token file's rows (and its emulation's) do not depend on
                # their batch (tests/test_export.py), and the emulation one row at a time costs minutes per cell
                emulated = np.concatenate([int8_runner(aware_model, spec, t.depth_rule)(f) for f in batched])
                file_out = dev_logits(paths["int8-aware"], batched)
                extra["int8_aware_file_vs_emulation"] = {
                    "agreement": agreement(file_out, emulated, regression=regression)[0],
                    "max_abs_diff": float(np.abs(file_out - emulated).max()),
                }
            lat = latency_ms(paths, names, vocab)  # ids the trimmed vocabulary has too
            base = compute_metric(inputs.task.metric, ref_dev, y)["score"]
            rows = {}
            for k, p in paths.items():
                if k == "android":  # its own verification: the trimmed vocabulary's ids are not the dev feeds'
                    rows[k] = {**extra.pop("android"), "latency_ms": lat[k], "size_mb": p.stat().st_size / 1e6}
                    continue
                out = ref_dev if k == "fp32" else dev_logits(p, one_row if rows_per_call[k] == 1 else batched)
                score = compute_metric(inputs.task.metric, out, y)["score"]
                rows[k] = {
                    "agreement": agreement(out, ref_dev, regression=regression)[0],
                    "metric": score,
                    "metric_change": score - base,
                    "latency_ms": lat[k],
                    "size_mb": p.stat().st_size / 1e6,
                    "rows_per_call": rows_per_call[k],
                }
            cells[spec.label] = {
                "width_mult": spec.width_mult,
                "depth_mult": spec.depth_mult,
                "variants": rows,
                **extra,
            }
            print(spec.label, json.dumps({k: round(v["agreement"], 4) for k, v in rows.items()}), flush=True)
    result = {
        "command": "python bench/int8_paths.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "project": {
            "task": inputs.task.metric,
            "train_rows": len(inputs.train),
            "dev_rows": len(inputs.dev),
            "model": a.model,
            "precision_trained": t.precision,
        },
        "calibration_rows": a.calibration_rows,
        "scoring_rows": a.scoring_rows,
        "cells": cells,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started),
    }
    stem = "int8_paths" + (f"_{a.tag}" if a.tag else "")

    def agree(x: float) -> str:  # classification: the share of same predictions; regression: Pearson r
        return f"{x:.4f}" if regression else f"{100 * x:.2f} %"

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# INT8 paths side by side (bench/int8_paths.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}). Dev {result['project']['task']} over "
        f"{result['project']['dev_rows']} rows; calibration on {a.calibration_rows} train rows, the sensitivity pass "
        f"scored on {a.scoring_rows} other train rows. Latency: onnxruntime, 1 thread, batch 1, sequence 128, "
        f"median. {result['machine']}; load average before {result['load_average_before']}, after "
        f"{result['load_average_after']}.",
        "",
        "Agreement and metric of the files quantized on the fly (per-token, dynamic, int8-aware) with the dev rows "
        "one at a time, as a device runs them; dynamic-batch32 is the same file as dynamic, run in batches of 32 "
        "padded rows (a dynamic file's ranges come from the batch it is given; a per-token file gives the same in "
        "batches). Static files have fixed ranges and run in batches of 32. android: the export job's own file "
        "and check (`dynastudio export --target android`: per-token INT8, trimmed vocabulary, INT8 tables, .ort), "
        "agreement with the PyTorch fp32 cell on dev; its latency with ids the trimmed vocabulary has.",
        "",
        "| cell | path | "
        + ("Pearson r with fp32 on dev" if regression else "dev agreement with fp32")
        + " | metric change (points) | latency ms | vs fp32 | size MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, c in cells.items():
        fp = c["variants"]["fp32"]["latency_ms"]
        for k, v in c["variants"].items():
            lines.append(
                f"| {label} | {k} | {agree(v['agreement'])} | {100 * v['metric_change']:+.2f} | "
                f"{v['latency_ms']:.2f} | {fp / v['latency_ms']:.2f}x | {v['size_mb']:.1f} |"
            )
        s = c.get("sensitivity", {})
        if "sensitivity" in c:
            lines.append(
                f"| {label} | (sensitivity: {s['method']}, kept fp32: {', '.join(s['kept_fp32']) or 'none'}) | | | | | |"
            )
        if "int8_aware_file_vs_emulation" in c:
            e = c["int8_aware_file_vs_emulation"]
            lines.append(
                f"| {label} | (int8-aware file vs its PyTorch emulation: {100 * e['agreement']:.2f} %, max logit "
                f"difference {e['max_abs_diff']:.1e}) | | | | | |"
            )
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
