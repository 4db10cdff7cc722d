"""The device kit's latency against the studio's own latency job, on the same machine, side by side.

    python bench/device_kit.py [--repeats 3] [--runs 50] [--threads 1] [--seq 128]

The built-in MiniLM (untrained weights do not change latency) on cells (1, 1), (0.5, 0.5), (0.25, 0.5),
fp32 and INT8. The kit runs in a fresh venv holding only numpy and onnxruntime (the versions of this
one), as a device would run it; the studio's job runs as `dynastudio latency` does. The two alternate
`--repeats` times, so a load that comes and goes weighs on both. Reported: each side's median over the
repeats of its per-run medians, and the kit / studio ratio per cell and format.
Results go to bench/results/device_kit.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CELLS = ((1.0, 1.0), (0.5, 0.5), (0.25, 0.5))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args(argv)
    from dynastudio.core import jobs
    from dynastudio.core.devicekit import device_kit_job
    from dynastudio.core.events import StopToken, null_sink
    from dynastudio.core.project import Project
    from dynastudio.core.store import Figures

    with tempfile.TemporaryDirectory(prefix="dynastudio-kitbench-") as tmp:
        tmp = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "dynastudio.core.cli", "new", str(tmp / "p"), "--demo"],
            check=True,
            capture_output=True,
        )
        project = Project.open(tmp / "p")
        kit = tmp / "kit"
        device_kit_job(project, jobs.DeviceKitRequest(str(kit), CELLS, ("fp32", "int8")), null_sink, StopToken())
        venv = tmp / "device"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                f"numpy=={version('numpy')}",
                f"onnxruntime=={version('onnxruntime')}",
            ],
            check=True,
            capture_output=True,
        )
        studio: dict = {}
        device: dict = {}
        for r in range(a.repeats):
            out = jobs.run(
                "latency",
                project,
                jobs.LatencyRequest(
                    batch=1, seq=a.seq, threads=a.threads, formats=("fp32", "int8"), runs=a.runs, warmup=10, specs=CELLS
                ),
            )
            for row in out["rows"]:
                for f in ("fp32", "int8"):
                    studio.setdefault((row["label"], f), []).append(Figures.from_values(row, f).median_ms)
            res = tmp / f"kit-{r}.json"
            subprocess.run(
                [
                    str(py),
                    str(kit / "run_kit.py"),
                    "--threads",
                    str(a.threads),
                    "--seq",
                    str(a.seq),
                    "--runs",
                    str(a.runs),
                    "--warmup",
                    "10",
                    "--device",
                    "bench",
                    "--out",
                    str(res),
                ],
                check=True,
                capture_output=True,
                cwd=tmp,
            )
            for row in json.loads(res.read_text())["rows"]:
                for f in ("fp32", "int8"):
                    device.setdefault((row["label"], f), []).append(Figures.from_values(row["values"], f).median_ms)
            print(f"repeat {r + 1}/{a.repeats} done", flush=True)
    rows = []
    for key in studio:
        s, d = float(np.median(studio[key])), float(np.median(device[key]))
        rows.append(
            {
                "cell": key[0],
                "format": key[1],
                "studio_ms": round(s, 3),
                "kit_ms": round(d, 3),
                "kit_over_studio": round(d / s, 3),
                "studio_runs_ms": studio[key],
                "kit_runs_ms": device[key],
            }
        )
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": a.threads,
        "batch": 1,
        "seq": a.seq,
        "runs": a.runs,
        "repeats": a.repeats,
        "onnxruntime": version("onnxruntime"),
        "rows": rows,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    lines = [
        f"device kit (clean venv: numpy + onnxruntime {version('onnxruntime')}) vs `dynastudio latency`, MiniLM, "
        f"{a.threads} thread, batch 1, seq {a.seq}, {a.runs} runs, median of {a.repeats} alternating repeats",
        f"{'cell':<12} {'format':<6} {'studio ms':>10} {'kit ms':>8} {'kit/studio':>11}",
    ]
    lines += [
        f"{r['cell']:<12} {r['format']:<6} {r['studio_ms']:>10.2f} {r['kit_ms']:>8.2f} {r['kit_over_studio']:>11.3f}"
        for r in rows
    ]
    print("\n".join(lines))
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "device_kit.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "device_kit.md").write_text(
        "# Device kit latency vs the studio's\n\n`python bench/device_kit.py`\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
