"""The exported ONNX graph as a user runs it: onnxruntime's default session options, against a reference graph.

    python bench/onnx_default_session.py [--runs 100] [--rounds 5] [--seq 128]

The reference is what a user would get without the studio: a Hugging Face BertForSequenceClassification
whose layers hold the sub-network's sliced weights (the same weights), exported with torch's TorchScript-
based ONNX exporter. Both graphs are opened with `ort.InferenceSession(path)` and only the thread count set
(1 thread, batch 1, `--seq` tokens), then timed in interleaved rounds. Reported per cell: each graph's
median and studio / reference. Also timed: the studio's graph as it was saved before this change (with the
exporter's shape annotations), which a default session fuses into SkipLayerNormalization.
Results go to bench/results/onnx_default_session.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CELLS = ((1.0, 1.0), (0.5, 0.5), (0.25, 0.5))


def hf_reference(model, slim):
    """The HF model with the sub-network's layers and sliced weights (what transformers 4's prune_heads made)."""
    from torch import nn

    ref = copy.deepcopy(model).eval()
    enc = ref.bert.encoder
    kept = slim.config.source["kept_layers"]
    enc.layer = nn.ModuleList([enc.layer[i] for i in kept])
    ref.config.num_hidden_layers = len(kept)

    def linear(src):
        out = nn.Linear(src.in_features, src.out_features)
        out.load_state_dict(src.state_dict())
        return out

    for hl, sl in zip(enc.layer, slim.layers):
        a = hl.attention
        a.self.query, a.self.key, a.self.value = linear(sl.query), linear(sl.key), linear(sl.value)
        a.self.num_attention_heads = sl.n_heads
        a.self.all_head_size = sl.query.out_features
        a.output.dense = linear(sl.attention_output)
        hl.intermediate.dense = linear(sl.intermediate)
        hl.output.dense = linear(sl.output)
    ref.classifier = linear(slim.classifier)
    ref.bert.pooler.dense = linear(slim.pooler)
    return ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="timed runs per graph, over all rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args(argv)
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    from dynastudio.core.dynamic import SubnetSpec
    from dynastudio.core.export.logits import example_inputs, logits_module, quiet_export
    from dynastudio.core.export.onnx import export_onnx
    from dynastudio.core.extract import extract_from_model
    from dynastudio.core.models import quiet_transformers, resolve_model

    quiet_transformers()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model("builtin:minilm"), num_labels=2).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    g = np.random.default_rng(0)
    ids = g.integers(1000, model.config.vocab_size, size=(1, a.seq)).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    def session(path):  # a user's session: the defaults, one thread
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    rows = []
    with tempfile.TemporaryDirectory(prefix="dynastudio-onnxbench-") as tmp:
        tmp = Path(tmp)
        for w, d in CELLS:
            slim = extract_from_model(model, SubnetSpec(w, d), "keep-last").eval()
            studio = export_onnx(slim, tmp / f"studio-{w}-{d}.onnx", names)
            ref_module = Logits(hf_reference(model, slim)).eval()
            reference = tmp / f"reference-{w}-{d}.onnx"
            with quiet_export(), torch.no_grad():
                torch.onnx.export(
                    ref_module,
                    example_inputs(names, slim.config.vocab_size),
                    str(reference),
                    input_names=names,
                    output_names=["logits"],
                    dynamo=False,
                    opset_version=17,
                    dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                )
            # the studio's graph as saved before: the exporter's value_info kept
            annotated = tmp / f"annotated-{w}-{d}.onnx"
            with quiet_export(), torch.no_grad():
                torch.onnx.export(
                    logits_module(slim, names),
                    example_inputs(names, slim.config.vocab_size),
                    str(annotated),
                    input_names=names,
                    output_names=["logits"],
                    dynamo=True,
                    verbose=False,
                    dynamic_shapes={n: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")} for n in names},
                )
            with torch.no_grad():
                want = ref_module(*(torch.from_numpy(feed[k]) for k in names)).numpy()
            sessions = {"studio": session(studio), "reference": session(reference), "annotated": session(annotated)}
            diff = max(float(np.abs(s.run(None, feed)[0] - want).max()) for s in sessions.values())
            times = {k: [] for k in sessions}
            for s in sessions.values():
                for _ in range(10):
                    s.run(None, feed)
            per_round = max(1, a.runs // a.rounds)
            for _ in range(a.rounds):
                for k, s in sessions.items():
                    for _ in range(per_round):
                        t = time.perf_counter()
                        s.run(None, feed)
                        times[k].append(time.perf_counter() - t)
            med = {k: float(np.median(v) * 1e3) for k, v in times.items()}
            ops = {}
            for k, p in (("studio", studio), ("annotated", annotated)):
                so = ort.SessionOptions()
                so.optimized_model_filepath = str(tmp / f"opt-{k}.onnx")
                ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
                ops[k] = sum(
                    n.op_type == "SkipLayerNormalization" for n in onnx.load(str(tmp / f"opt-{k}.onnx")).graph.node
                )
            row = {
                "cell": f"w{w:g}_d{d:g}",
                **{f"{k}_ms": v for k, v in med.items()},
                "studio_over_reference": med["studio"] / med["reference"],
                "annotated_over_reference": med["annotated"] / med["reference"],
                "skiplayernorm_fused": ops,
                "max_abs_diff_vs_pytorch": diff,
            }
            rows.append(row)
            print(
                f"{row['cell']:<10} studio {med['studio']:.2f} ms  reference {med['reference']:.2f} ms  "
                f"ratio {row['studio_over_reference']:.3f}  (before: {med['annotated']:.2f} ms, "
                f"{row['annotated_over_reference']:.3f})  SkipLayerNorm fused: {ops}",
                flush=True,
            )
    result = {
        "setup": {
            "cpu": platform.processor() or platform.machine(),
            "threads": 1,
            "batch": 1,
            "seq": a.seq,
            "runs": a.runs,
            "rounds": a.rounds,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "session": "onnxruntime defaults, intra_op_num_threads=1",
            "load_avg_1m": os.getloadavg()[0],
        },
        "rows": rows,
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_default_session.json").write_text(json.dumps(result, indent=2))
    md = [
        "| cell | studio (ms) | reference (ms) | studio / reference | before this change (ms) | before / reference |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['cell']} | {r['studio_ms']:.2f} | {r['reference_ms']:.2f} | {r['studio_over_reference']:.3f} | "
        f"{r['annotated_ms']:.2f} | {r['annotated_over_reference']:.3f} |"
        for r in rows
    ]
    (out / "onnx_default_session.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
