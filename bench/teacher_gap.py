"""How far each of a project's 12 cells lands from its own teacher on dev, paired: every cell and the teacher scored
on the same dev rows, cell minus teacher with a 95 % paired-bootstrap interval, and the targets asked for
(--within w1_d1=0.5 w0.25_d0.5=4 ...: the cell may fall at most that many points under the teacher). Dev only
reports here; nothing is chosen by it. Inference only (seconds for a small model on CPU).

    python bench/teacher_gap.py PROJECT [--within LABEL=POINTS ...] [--boot 2000] [--name NAME]
Writes bench/results/teacher_gap[_NAME].{md,json}.
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

from augment import LABELS, paired_differences  # noqa: E402
from depth_rule import cell_logits  # noqa: E402
from sst2 import OUT, write_md  # noqa: E402
from teacher_pair import dev_logits  # noqa: E402

from dynastudio.core.metrics import compute_metric  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402


def within(text: str) -> tuple[str, float]:
    label, _, points = text.partition("=")
    if label not in LABELS or not points:
        raise argparse.ArgumentTypeError(f"{text!r}: write LABEL=POINTS with LABEL one of {', '.join(LABELS)}")
    return label, float(points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("--within", type=within, nargs="*", default=[], help="LABEL=POINTS: a target gap for a cell")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    project = Project.open(args.project)
    if not project.is_done("depth"):
        raise SystemExit(f"{args.project}: the depth stage is not done; run `dynastudio run {args.project}` first")
    t_logits, y, metric = dev_logits(args.project)
    cells, y_cells, _ = cell_logits(project)
    if not np.array_equal(y, y_cells):
        raise AssertionError("the teacher and the cells were scored on different dev rows")
    teacher = float(compute_metric(metric, t_logits, y)["score"])
    rows = {}
    for label in LABELS:
        score = float(compute_metric(metric, cells[label], y)["score"])
        d = paired_differences(metric, cells[label], t_logits, y, args.boot)
        rows[label] = {
            "score": score,
            "minus_teacher": score - teacher,
            "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
        }
    targets = {
        label: {"within": pts, "met": 100 * (teacher - rows[label]["score"]) <= pts} for label, pts in args.within
    }
    report = {
        "argv": "python bench/teacher_gap.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "project": str(args.project),
        "metric": metric,
        "dev_rows": len(y),
        "teacher": teacher,
        "cells": rows,
        "targets": targets,
        "resamples": args.boot,
    }
    stem = f"teacher_gap_{args.name}" if args.name else "teacher_gap"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    pts = lambda v: 100 * v  # noqa: E731
    md = [
        "# Each cell against its own teacher on dev, paired (bench/teacher_gap.py)",
        "",
        f"`{report['argv']}` (finished {report['finished']}). Dev only reports.",
        "",
        f"Teacher dev {metric}: {pts(teacher):.2f} on {len(y)} rows.",
        "",
        "| width | depth | cell | cell - teacher | 95 % interval | target |",
        "|---|---|---|---|---|---|",
    ]
    for label in LABELS:
        r = rows[label]
        w, d = label[1:].split("_d")
        t = targets.get(label)
        mark = f"within {t['within']:g}: {'met' if t['met'] else 'missed'}" if t else ""
        md.append(
            f"| {w} | {d} | {pts(r['score']):.2f} | {pts(r['minus_teacher']):+.2f} | "
            f"{pts(r['ci95'][0]):+.2f} to {pts(r['ci95'][1]):+.2f} | {mark} |"
        )
    write_md(md, report, OUT / f"{stem}.md")


if __name__ == "__main__":
    main()
