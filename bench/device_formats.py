"""Every device format of a trained project, for the full model and (0.5, 0.5): size, latency here, agreement.

    python bench/device_formats.py PROJECT [--runs 60] [--rounds 3] [--seq 128]

Each format is exported with the studio's own export job (verified as it always is) and then timed on
this CPU with its own runtime, 1 thread, batch 1, `--seq` tokens, in interleaved rounds:
onnxruntime with default session options (onnx, onnx-int8, ort, ort-int8), OpenVINO with its default CPU
settings (openvino; plus OpenVINO running the onnx-int8 file, the "INT8 under both runtimes" figure),
the ExecuTorch runtime (executorch), torch (torchscript). Core ML has no runtime here: size and the spec
check only. Agreement is the export's own: the share of dev predictions equal to PyTorch fp32's (formats
verified to 1e-4 are listed as exact). Also: the width 0.25, depth 0.5 INT8 file with and without
vocabulary trimming. Results go to bench/results/device_formats.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CELLS = ((1.0, 1.0), (0.5, 0.5))
FORMATS = ("onnx", "onnx-int8", "ort", "ort-int8", "openvino", "executorch", "coreml", "torchscript")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--md-only", action="store_true", help="re-render the .md from the saved .json")
    a = ap.parse_args(argv)
    if a.md_only:
        result = json.loads((REPO / "bench" / "results" / "device_formats.json").read_text())
        for r in result["rows"]:
            if r["format"] == "onnx-int8 in OpenVINO":  # runs saved before this row stopped copying the ORT agreement
                r.update(agreement=None, max_abs_diff=None, verified_by="not checked in OpenVINO (timed only)")
        write_md(result)
        return 0
    import onnxruntime as ort
    import torch

    from dynastudio.core.events import StopToken, null_sink
    from dynastudio.core.export.job import export_job
    from dynastudio.core.export.runtimes import import_openvino
    from dynastudio.core.export.targets import MODEL_FILES
    from dynastudio.core.project import Project
    from dynastudio.core.requests import ExportRequest

    torch.set_num_threads(1)
    project = Project.open(Path(a.project))
    ov = import_openvino()
    core = ov.Core()

    def runner(fmt: str, path: Path, feed: dict):
        if fmt in ("onnx", "onnx-int8", "ort", "ort-int8"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            f = {i.name: feed[i.name] for i in s.get_inputs()}
            return lambda: s.run(None, f)
        if fmt in ("openvino", "openvino:onnx-int8"):
            req = core.compile_model(
                str(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            ).create_infer_request()
            return lambda: req.infer(feed)
        if fmt == "executorch":
            from executorch.runtime import Runtime

            method = Runtime.get().load_program(str(path)).load_method("forward")
            args = [
                torch.from_numpy(feed[k])
                for k in ("input_ids", "attention_mask", "token_type_ids")[: method.metadata.num_inputs()]
            ]
            return lambda: method.execute(args)
        if fmt == "torchscript":
            m = torch.jit.load(str(path)).eval()
            args = [torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]

            def run():
                with torch.no_grad():
                    m(*args)

            return run
        return None

    rows = []
    with tempfile.TemporaryDirectory(prefix="dynastudio-formats-") as tmp:
        tmp = Path(tmp)
        for w, d in CELLS:
            runs = {}
            for fmt in FORMATS:
                out = tmp / f"{fmt}-{w}-{d}"
                rep = export_job(project, ExportRequest(w, d, fmt, str(out), min_agreement=0.5), null_sink, StopToken())
                v = rep.verification
                ids = (
                    np.random.default_rng(0).integers(1000, 20000, size=(1, a.seq)).astype(np.int64)
                )  # ordinary word pieces
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
                row = {
                    "cell": f"w{w:g}_d{d:g}",
                    "format": fmt,
                    "size_mb": rep.size_mb,
                    "agreement": rep.agreement,
                    "max_abs_diff": rep.max_abs_diff,
                    "verified_by": v["runtime"] if v["runtime_verified"] else "spec check only (no runtime here)",
                    "passed": rep.passed,
                }
                rows.append(row)
                r = runner(fmt, out / MODEL_FILES[fmt], feed)
                if r is not None:
                    runs[fmt] = (row, r)
                if fmt == "onnx-int8":  # INT8 under OpenVINO as well
                    row2 = {
                        **row,
                        "format": "onnx-int8 in OpenVINO",
                        "agreement": None,
                        "max_abs_diff": None,
                        "verified_by": "not checked in OpenVINO (timed only)",
                    }
                    rows.append(row2)
                    runs["openvino:onnx-int8"] = (row2, runner("openvino:onnx-int8", out / MODEL_FILES[fmt], feed))
                print(f"exported w{w:g} d{d:g} {fmt}: {rep.size_mb:.1f} MB, agreement {rep.agreement}", flush=True)
            times = {k: [] for k in runs}
            for _, r in runs.values():
                for _ in range(5):
                    r()
            per_round = max(1, a.runs // a.rounds)
            for _ in range(a.rounds):
                for k, (_, r) in runs.items():
                    for _ in range(per_round):
                        t = time.perf_counter()
                        r()
                        times[k].append(time.perf_counter() - t)
            for k, (row, _) in runs.items():
                row["latency_ms"] = float(np.median(times[k]) * 1e3)
                print(f"  w{w:g} d{d:g} {row['format']:<22} {row['latency_ms']:.2f} ms", flush=True)
        # the trimming target: w0.25 d0.5 INT8, with and without the vocabulary trimmed
        trim = []
        for on in (False, True):
            out = tmp / f"trim-{on}"
            rep = export_job(
                project,
                ExportRequest(0.25, 0.5, "onnx-int8", str(out), trim_vocab=on, min_agreement=0.5),
                null_sink,
                StopToken(),
            )
            trim.append(
                {
                    "trimmed": on,
                    "size_mb": rep.size_mb,
                    "bytes": (out / MODEL_FILES["onnx-int8"]).stat().st_size,
                    "agreement": rep.agreement,
                    "dev_examples": rep.dev_examples,
                    "vocabulary": rep.verification.get("vocabulary"),
                }
            )
            print(f"w0.25 d0.5 onnx-int8 trimmed={on}: {rep.size_mb:.2f} MB, agreement {rep.agreement:.4f}", flush=True)
    result = {
        "setup": {
            "cpu": platform.processor() or platform.machine(),
            "threads": 1,
            "batch": 1,
            "seq": a.seq,
            "runs": a.runs,
            "rounds": a.rounds,
            "project": Path(a.project).name,
            "load_avg_1m": os.getloadavg()[0],
            "onnxruntime": ort.__version__,
            "openvino": ov.get_version(),
            "torch": torch.__version__,
        },
        "rows": rows,
        "trim": trim,
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_formats.json").write_text(json.dumps(result, indent=2, default=str))
    write_md(result)
    return 0


def write_md(result: dict) -> None:
    rows, trim = result["rows"], result["trim"]
    md = [
        "| cell | format | file (MB) | latency here (ms) | dev agreement with PyTorch fp32 | verified with |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = f"{r['latency_ms']:.2f}" if "latency_ms" in r else "not run here"
        agree = (
            f"{100 * r['agreement']:.2f}%"
            if r["agreement"] is not None
            else ("exact (max diff {:.0e})".format(r["max_abs_diff"]) if r["max_abs_diff"] is not None else "-")
        )
        md.append(f"| {r['cell']} | {r['format']} | {r['size_mb']:.1f} | {lat} | {agree} | {r['verified_by']} |")
    md += ["", "| w0.25 d0.5 INT8 | file (bytes) | dev agreement with PyTorch fp32 |", "|---|---|---|"]
    md += [
        f"| {'trimmed' if t['trimmed'] else 'not trimmed'} | {t['bytes']:,} | {100 * t['agreement']:.2f}% of {t['dev_examples']} |"
        for t in trim
    ]
    s = result["setup"]
    md += [
        "",
        f"1 thread, batch {s['batch']}, {s['seq']} tokens, {s['runs']} runs in {s['rounds']} interleaved rounds; "
        f"onnxruntime {s['onnxruntime']}, OpenVINO {s['openvino']}, torch {s['torch']}; project {s['project']}.",
    ]
    (REPO / "bench" / "results" / "device_formats.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
