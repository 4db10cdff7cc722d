"""Seconds from `dynastudio run DIR` to the evaluate stage scoring its first sub-network, on a project whose
stages up to depth are done: what a resume costs before any work, i.e. reading (or not) the task again.

Each trial spawns a fresh `dynastudio run DIR` process with one hook: the first call of the engine's
`predict` prints the wall-clock time and ends the process at once, so nothing is written and the
project stays "finished up to evaluate" for the next trial. The figure includes the interpreter start
and the imports, as a user waits for them.

    python bench/resume_startup.py --project DIR [--trials 5]

`--cli-module` / `--predict-module` name where the CLI and `predict` live, so the same harness times an
older checkout of the engine (0.1: `core.cli`, `core.pipeline`, with PYTHONPATH pointing at that checkout).
Writes bench/results/resume_startup.{json,md} unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOOK = r"""
import os, sys, time, importlib
pm = importlib.import_module({predict_module!r})
def first_predict(*a, **k):
    print("@@first_predict", time.time(), flush=True)
    os._exit(0)
pm.predict = first_predict
cli = importlib.import_module({cli_module!r})
sys.exit(cli.main(["run", {project!r}]))
"""


def trial(project: str, cli_module: str, predict_module: str) -> float:
    code = HOOK.format(project=project, cli_module=cli_module, predict_module=predict_module)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    for line in out.stdout.splitlines():
        if line.startswith("@@first_predict"):
            return float(line.split()[1]) - t0
    raise RuntimeError(f"the run never reached evaluate (exit {out.returncode}):\n{out.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", required=True, help="a project whose stages up to depth are done")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--cli-module", default="dynastudio.core.cli")
    ap.add_argument("--predict-module", default="dynastudio.core.evaluate")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    from dynastudio.core.store import read_task

    times = [trial(a.project, a.cli_module, a.predict_module) for _ in range(a.trials)]
    task = read_task(Path(a.project))
    res = {
        "label": a.label,
        "project": a.project,
        "train_rows": task.train_rows,
        "dev_rows": task.dev_rows,
        "trials_s": [round(t, 2) for t in times],
        "median_s": round(statistics.median(times), 2),
        "load_avg_1m_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(res, indent=2))
    if not a.no_write:
        out = Path(__file__).resolve().parent / "results"
        out.mkdir(exist_ok=True)
        path = out / "resume_startup.json"
        old = json.loads(path.read_text()) if path.is_file() else []
        old = [r for r in old if r.get("label") != a.label] + [res]
        path.write_text(json.dumps(old, indent=2))
        lines = [
            "# Resume start-up: `dynastudio run` to the first evaluated sub-network",
            "",
            "| checkout | train rows | trials (s) | median (s) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['label']} | {r['train_rows']} | {', '.join(map(str, r['trials_s']))} | {r['median_s']} |"
            for r in old
        ]
        (out / "resume_startup.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
