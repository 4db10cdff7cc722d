"""Two teachers on dev, paired: each project's teacher scored on the same dev rows, and the 95 % paired-bootstrap
interval of the difference (B - A). For reading a grid of teachers (bench/teacher_lr.py): is the best on dev
really ahead of the runner-up, or within the noise of the dev set? Dev only reports here.

    python bench/teacher_pair.py PROJECT_A PROJECT_B [--boot 2000] [--name NAME]
Writes bench/results/teacher_pair[_NAME].{md,json}. Inference only (seconds for a small model on CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"

from augment import paired_differences  # noqa: E402

from dynastudio.core.metrics import compute_metric  # noqa: E402
from dynastudio.core.prepare import prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.stages import _full_model_logits  # noqa: E402


def dev_logits(folder: Path):
    """(the teacher's dev logits, the dev labels, the task's metric) of one project."""
    project = Project.open(folder)
    inputs = prepare_inputs(project)
    model = project.load_model("teacher", "cpu")
    return _full_model_logits(inputs, model, inputs.dev), np.asarray(inputs.dev.labels), inputs.task.metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    (la, y, metric), (lb, yb, _) = dev_logits(args.a), dev_logits(args.b)
    if not np.array_equal(y, yb):
        raise SystemExit(f"{args.a} and {args.b} do not have the same dev rows")

    def score(logits, idx) -> float:
        return float(compute_metric(metric, logits[idx], y[idx])["score"])

    every = np.arange(len(y))
    diffs = paired_differences(metric, lb, la, y, args.boot)
    report = {
        "argv": "python bench/teacher_pair.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "metric": metric,
        "dev_rows": len(y),
        "a": {"project": str(args.a), "dev_score": score(la, every)},
        "b": {"project": str(args.b), "dev_score": score(lb, every)},
        "b_minus_a": score(lb, every) - score(la, every),
        "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "share_b_not_ahead": float((diffs <= 0).mean()),
        "resamples": args.boot,
    }
    stem = f"teacher_pair_{args.name}" if args.name else "teacher_pair"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    md = [
        "# Two teachers on dev, paired (bench/teacher_pair.py)",
        "",
        f"`{report['argv']}` (finished {report['finished']}). Dev only reports.",
        "",
        f"| teacher | {metric} on {len(y)} dev rows |",
        "|---|---:|",
        f"| A: {args.a.name} | {100 * report['a']['dev_score']:.2f} |",
        f"| B: {args.b.name} | {100 * report['b']['dev_score']:.2f} |",
        "",
        f"B - A: {100 * report['b_minus_a']:+.2f} points; 95 % paired-bootstrap interval "
        f"{100 * report['ci95'][0]:+.2f} to {100 * report['ci95'][1]:+.2f} ({args.boot} resamples of the dev rows); "
        f"B is not ahead in {100 * report['share_b_not_ahead']:.1f} % of them.",
    ]
    (OUT / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
