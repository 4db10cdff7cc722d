"""Time the sub-networks of this DynaBERT Studio device kit on this device.

    python run_kit.py [--threads 1] [--batch 1] [--seq N] [--runs 50] [--warmup 10] [--device NAME]

Needs Python 3.8+, numpy and onnxruntime only (no torch, no project). Writes latency-<device>.json
beside this script; `dynastudio latency PROJECT --import latency-<device>.json` brings it into the
project's grid under the device's name. The session and the inputs are the studio's own, so the
figures compare with `dynastudio latency` on another machine.
"""

import argparse
import json
import os
import platform
import re
import socket
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def session(path, threads, disabled):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def feed(input_names, vocab, batch, seq):
    """Full-length random sentences (no padding), the same as the studio's latency job."""
    g = np.random.default_rng(0)
    low = 1000 if vocab > 2000 else min(5, vocab - 1)
    ids = g.integers(low, vocab, size=(batch, seq), dtype=np.int64)
    f = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {k: f[k] for k in input_names}


def time_runs(sess, inputs, runs, warmup):
    for _ in range(warmup):
        sess.run(None, inputs)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, inputs)
        out.append(time.perf_counter() - t)
    return out


def main(argv=None):
    with open(os.path.join(HERE, "kit.json"), encoding="utf-8") as f:
        kit = json.load(f)
    ap = argparse.ArgumentParser(description="Time this kit's sub-networks on this device.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=kit["seq"])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", default=socket.gethostname(), help="the name the results go under (default: host name)")
    ap.add_argument("--out", help="where to write the results (default: latency-<device>.json beside this script)")
    a = ap.parse_args(argv)
    if a.threads < 1 or a.batch < 1 or a.seq < 2 or a.runs < 1 or a.warmup < 0:
        ap.error("threads, batch and runs must be at least 1, seq at least 2, warmup 0 or more")
    if a.seq > kit["max_seq"]:
        ap.error("--seq %d: the model takes at most %d tokens" % (a.seq, kit["max_seq"]))
    import onnxruntime

    cells = kit["cells"]
    feeds = {c["label"]: feed(c["inputs"], c["vocab_size"], a.batch, a.seq) for c in cells}
    rounds = max(1, min(5, a.runs // 10))
    share = [a.runs // rounds + (1 if r < a.runs % rounds else 0) for r in range(rounds)]
    warm = max(1, -(-a.warmup // rounds)) if a.warmup else 0
    times = {(c["label"], fmt): [] for c in cells for fmt in c["files"]}
    for r in range(rounds):  # interleaved: a load that comes and goes weighs on every cell alike
        for c in cells:
            for fmt, rel in c["files"].items():
                # the studio's own session: the optimizers it leaves out come with the kit
                sess = session(os.path.join(HERE, rel), a.threads, kit["disabled_optimizers"])
                times[(c["label"], fmt)] += time_runs(
                    sess, feeds[c["label"]], share[r], warm if r else max(warm, a.warmup)
                )
                del sess
        print("round %d/%d done" % (r + 1, rounds), flush=True)
    rows = []
    for c in cells:
        values = {}
        for fmt, rel in c["files"].items():
            ms = np.asarray(times[(c["label"], fmt)]) * 1e3
            values["latency_%s_ms" % fmt] = float(np.median(ms))
            values["latency_%s_p90_ms" % fmt] = float(np.percentile(ms, 90))
            values["size_onnx_%s_mb" % fmt] = os.path.getsize(os.path.join(HERE, rel)) / 1e6
        rows.append(
            {"label": c["label"], "width_mult": c["width_mult"], "depth_mult": c["depth_mult"], "values": values}
        )
        print("%-12s %s" % (c["label"], "  ".join("%s %.2f ms" % (f, values["latency_%s_ms" % f]) for f in c["files"])))
    result = {
        "kind": "dynastudio-device-latency",
        "version": 1,
        "kit": kit["id"],
        "project": kit["project"],
        "setup": {
            "device": a.device,
            "cpu": cpu_name(),
            "machine": platform.machine(),
            "os": "%s %s" % (platform.system(), platform.release()),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "runtime": "onnxruntime %s CPUExecutionProvider" % onnxruntime.__version__,
            "threads": a.threads,
            "batch": a.batch,
            "seq": a.seq,
            "runs": a.runs,
            "warmup": a.warmup,
            "statistics": "median and p90 of the timed runs (in %d interleaved rounds), milliseconds per batch"
            % rounds,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "rows": rows,
    }
    if kit.get("shape_layers"):  # the per-layer shape models' layer count, for the search's latency table
        result["shape_layers"] = kit["shape_layers"]
    out = a.out or os.path.join(HERE, "latency-%s.json" % re.sub(r"[^A-Za-z0-9._-]+", "_", a.device))
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, out)
    print("wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
