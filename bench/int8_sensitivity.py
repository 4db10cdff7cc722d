"""Where does dynamic INT8's disagreement with fp32 come from? Each kind of MatMul, and each layer, kept in fp32.

For each cell: the fp32 ONNX file of the sub-network, onnxruntime's dynamic INT8 of it (what the export ships),
and the same INT8 with one group of MatMuls left in fp32: every query, key, value, attention-output, FFN-input or
FFN-output projection, or every projection of one layer. Each file runs train rows of the project (its importance
rows: the teacher never trained on them, the students did unless train.reuse_importance_rows is off; never dev)
one at a time, as a device runs them. Reported per variant: the
predictions that differ from fp32 (flips), the mean and 99th percentile of the largest logit difference per row,
and how many rows have an fp32 margin (top logit minus the next) under 0.1, 0.2 and 0.5.

    python bench/int8_sensitivity.py PROJECT_DIR [--cells 1,1 0.5,0.5] [--rows 1000]
Writes bench/results/int8_sensitivity.{md,json}. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"

import numpy as np  # noqa: E402

from dynastudio.core.data.batching import iterate_batches  # noqa: E402
from dynastudio.core.data.encoding import Encoded  # noqa: E402
from dynastudio.core.dynamic import SubnetSpec  # noqa: E402
from dynastudio.core.export.calibrate import matmul_nodes  # noqa: E402
from dynastudio.core.export.formats import write_format  # noqa: E402
from dynastudio.core.export.logits import input_names_for  # noqa: E402
from dynastudio.core.export.quantize import dynamic_matmuls  # noqa: E402
from dynastudio.core.export.runners import feed, ort_session  # noqa: E402
from dynastudio.core.extract import extract_from_model  # noqa: E402
from dynastudio.core.prepare import prepare_inputs, project_tokenizer  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402

# the exporter writes each layer's weight MatMuls in this order (checked below against the weights' shapes)
KINDS = ("query", "key", "value", "attention output", "FFN input", "FFN output")


def logits(path: Path, feeds: list[dict]) -> np.ndarray:
    session = ort_session(path)
    return np.concatenate([session.run(None, f)[0] for f in feeds])


def check_order(path: Path, nodes: list[str], hidden: int) -> None:
    """Each layer's six MatMuls: q, k, v read the hidden size and write heads x head_dim; the attention output
    writes the hidden size; the FFN input writes the neurons, the FFN output reads them."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    by_name = {n.name: n for n in m.graph.node}
    for i, name in enumerate(nodes):
        w = next(shapes[x] for x in by_name[name].input if x in shapes)
        kind = KINDS[i % 6]
        ok = w[0] == hidden if kind in ("query", "key", "value", "FFN input") else w[1] == hidden
        if not ok or len(nodes) % 6:
            raise SystemExit(f"{path.name}: MatMul {name} ({w}) is not a {kind} projection: the order changed")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project")
    ap.add_argument("--cells", nargs="+", default=["1,1", "0.5,0.5"])
    ap.add_argument("--rows", type=int, default=1000)
    a = ap.parse_args()
    project = Project.open(Path(a.project))
    inputs, tok = prepare_inputs(project), project_tokenizer(project)
    model = project.load_model("depth")
    t = project.config.train
    held = inputs.heldout
    n = min(a.rows, len(held))
    rows = Encoded(
        held.input_ids[:n],
        held.token_type_ids[:n] if held.token_type_ids is not None else None,
        held.labels[:n],
        held.is_regression,
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    started, load_before = time.time(), os.getloadavg()
    cells = {}
    with tempfile.TemporaryDirectory(prefix="int8-sensitivity-") as scratch:
        for c in a.cells:
            spec = SubnetSpec(*(float(x) for x in c.split(",")))
            slim = extract_from_model(model, spec, t.depth_rule)
            names = input_names_for(tok, slim)
            feeds = [feed(b, names) for b in iterate_batches(rows, 1, shuffle=False, pad_id=pad)]
            d = Path(scratch) / spec.label
            (d / "fp32").mkdir(parents=True)
            fp32 = write_format("onnx", slim, d / "fp32", names)
            nodes = matmul_nodes(fp32)
            check_order(fp32, nodes, slim.config.hidden_size)
            ref = logits(fp32, feeds)
            top2 = np.sort(ref, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            variants = {"every MatMul INT8": []}
            for j, kind in enumerate(KINDS):
                variants[f"every {kind} in fp32"] = [x for i, x in enumerate(nodes) if i % 6 == j]
            for layer in range(len(nodes) // 6):
                variants[f"layer {layer} in fp32"] = nodes[6 * layer : 6 * layer + 6]
            out = {}
            for name, exclude in variants.items():
                q = d / "q.onnx"
                dynamic_matmuls(fp32, q, False, exclude)  # the export's own settings
                got = logits(q, feeds)
                diff = np.abs(got - ref).max(axis=1)
                out[name] = {
                    "fp32_matmuls": len(exclude),
                    "flips": int((got.argmax(1) != ref.argmax(1)).sum()),
                    "mean_max_diff": float(diff.mean()),
                    "p99_max_diff": float(np.percentile(diff, 99)),
                }
                print(spec.label, name, out[name], flush=True)
            cells[spec.label] = {
                "variants": out,
                "rows_with_margin_under": {str(x): int((margin < x).sum()) for x in (0.1, 0.2, 0.5)},
            }
    result = {
        "command": "python bench/int8_sensitivity.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": n,
        "seconds": round(time.time() - started),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cells": cells,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "int8_sensitivity.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Where dynamic INT8 disagrees with fp32: MatMuls kept in fp32 by kind and by layer (bench/int8_sensitivity.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}, {result['seconds']} s). {n} train rows of the "
        "project (its importance rows; not dev), one at a time, onnxruntime's dynamic INT8 "
        "as the export makes it, lookup tables fp32 in every variant. flips: rows whose INT8 prediction differs "
        "from fp32; |d|: the largest logit difference of a row, mean and 99th percentile over the rows. "
        f"Load average before {[round(x, 2) for x in load_before]}, after "
        f"{[round(x, 2) for x in result['load_average_after']]}; nothing else ran (flock /tmp/torch.lock).",
        "",
    ]
    for label, cell in cells.items():
        m = cell["rows_with_margin_under"]
        lines += [
            f"## {label}",
            "",
            f"Rows whose fp32 margin is under 0.1 / 0.2 / 0.5: {m['0.1']} / {m['0.2']} / {m['0.5']} of {n}.",
            "",
            "| variant | MatMuls in fp32 | flips | agreement | mean \\|d\\| | p99 \\|d\\| |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, v in cell["variants"].items():
            lines.append(
                f"| {name} | {v['fp32_matmuls']} | {v['flips']} | {100 * (1 - v['flips'] / n):.2f} % | "
                f"{v['mean_max_diff']:.4f} | {v['p99_max_diff']:.3f} |"
            )
        lines.append("")
    (OUT / "int8_sensitivity.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
