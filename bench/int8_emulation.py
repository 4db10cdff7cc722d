"""How exactly does the PyTorch INT8 emulation (quantaware.py, what the int8-aware stage trains through) reproduce
the INT8 file, on a real model, and how exactly can it?

On one cell of a trained project's int8-aware model, over the first N dev rows one at a time (as a device runs
them), compares the logits of:
  - the INT8 file (per-token quantization, the export's default), its lookup tables fp32 or INT8 rows as the
    export stores them, with onnxruntime's graph optimizations on and off, against the emulation;
  - the emulation against itself with 1 and 2 threads (another summation order of the same fp32 arithmetic);
  - the emulation against itself with every weight multiplied by 1 + 1e-7 (about one fp32 rounding step).
INT8 rounds every activation to one of 256 levels: a value that sits within an fp32 rounding step of a
level boundary goes one way or the other, and the step it takes moves everything after it. The last two rows give
that floor: how far two computations that agree to fp32's precision end up apart.

    flock /tmp/torch.lock .venv/bin/python bench/int8_emulation.py PROJECT [--cell 0.75,1] [--rows 150]
Writes bench/results/int8_emulation.{md,json}. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project")
    ap.add_argument("--cell", default="0.75,1")
    ap.add_argument("--rows", type=int, default=150)
    a = ap.parse_args()
    import numpy as np
    import onnxruntime as ort
    import torch

    from dynastudio.core import dynamic, quantaware
    from dynastudio.core.dynamic import SubnetSpec
    from dynastudio.core.export.formats import write_format
    from dynastudio.core.export.job import int8_runner
    from dynastudio.core.export.logits import input_names_for
    from dynastudio.core.export.quantize import per_token_matmuls, quantize_int8
    from dynastudio.core.extract import extract_from_model
    from dynastudio.core.prepare import prepare_inputs, project_tokenizer
    from dynastudio.core.project import Project

    t0 = time.perf_counter()
    torch.set_num_threads(2)
    p = Project.open(Path(a.project))
    if not p.has_model("int8"):
        raise SystemExit(f"{a.project}: no int8-aware model: run the project with --int8-epochs N first")
    inputs = prepare_inputs(p)
    model = p.load_model("int8", "cpu").eval()
    w, d = (float(x) for x in a.cell.split(","))
    spec, rule = SubnetSpec(w, d), p.config.train.depth_rule
    slim = extract_from_model(model, spec, rule)
    names = input_names_for(project_tokenizer(p), slim)
    feeds = []
    for ids in inputs.dev.input_ids[: a.rows]:
        x = np.asarray(ids, np.int64)[None]
        f = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}
        feeds.append({k: v for k, v in f.items() if k in names})

    def emulate(threads: int = 2) -> np.ndarray:
        torch.set_num_threads(threads)
        run = int8_runner(model, spec, rule)
        out = np.concatenate([run(f) for f in feeds])
        torch.set_num_threads(2)
        return out

    def compare(x: np.ndarray, y: np.ndarray) -> dict:
        diff = np.abs(x - y).max(axis=1)
        return {
            "max_abs_diff": float(diff.max()),
            "median_abs_diff": float(np.median(diff)),
            "agreement": float((x.argmax(1) == y.argmax(1)).mean()),
        }

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "fp32").mkdir()
        fp32 = write_format("onnx", slim, folder / "fp32", names)
        files = {"fp32 tables": folder / "a.onnx", "INT8 tables (as exported)": folder / "b.onnx"}
        per_token_matmuls(fp32, files["fp32 tables"], False)
        quantize_int8(fp32, files["INT8 tables (as exported)"])
        real_tables = dynamic.int8_tables
        for variant, path in files.items():
            # the emulation rounds the tables exactly when the file stores them as INT8 rows
            tables = real_tables if variant.startswith("INT8") else (lambda emb: {})
            dynamic.int8_tables = quantaware.int8_tables = tables  # the runner takes them from quantaware
            emulated = emulate()
            for opt, level in (
                ("on", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                ("off", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
            ):
                so = ort.SessionOptions()
                so.graph_optimization_level, so.intra_op_num_threads = level, 2
                sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                out = np.concatenate([sess.run(None, f)[0] for f in feeds])
                rows[f"file ({variant}, graph optimizations {opt}) vs emulation"] = compare(out, emulated)
        dynamic.int8_tables = quantaware.int8_tables = real_tables
    base = emulate()
    rows["emulation, 2 threads vs 1 thread"] = compare(base, emulate(1))
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(1 + 1e-7)
    rows["emulation vs itself with every weight x (1 + 1e-7)"] = compare(base, emulate())
    result = {
        "command": "python bench/int8_emulation.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cell": spec.label,
        "rows": len(feeds),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, onnxruntime {ort.__version__}",
        "seconds": round(time.perf_counter() - t0),
        "comparisons": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "int8_emulation.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# The INT8 emulation against the INT8 file, and the floor of both (bench/int8_emulation.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}): cell {spec.label} of the project's int8-aware "
        f"model, the first {len(feeds)} dev rows one at a time; {result['machine']}. Nothing else ran (under flock "
        "/tmp/torch.lock).",
        "",
        "| logits of | against | largest difference | median of each row's largest | same prediction |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        left, _, right = name.partition(" vs ")
        lines.append(
            f"| {left} | {right} | {r['max_abs_diff']:.3f} | {r['median_abs_diff']:.4f} | {100 * r['agreement']:.1f} % |"
        )
    lines += [
        "",
        "Dynamic INT8 rounds every activation to one of 256 levels: a value within an fp32 rounding step of a level "
        "boundary goes either way, and that step moves everything after it. The last row is that floor (every "
        "weight changed by about one fp32 rounding step); when the file-against-emulation rows sit at it, the "
        "emulation is as exact as fp32 arithmetic lets any reimplementation be.",
        "",
    ]
    (OUT / "int8_emulation.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
