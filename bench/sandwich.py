"""The depth stage with sandwich shapes against without: do the 12 cells lose anything, and what does it cost?

Given a project whose depth stage is done (the plain arm, copied as it is: its depth stage is not run again, which
the report says), this copies it up to its width stage with train.sandwich set to K (--k, default 2), runs the
depth and evaluate stages in a child `dynastudio run`, and compares the 12 cells on dev with a 95 % paired
bootstrap per cell, and the depth stage's time. Dev only reports. Writes bench/results/<name>.{md,json}.

    python bench/sandwich.py --project PROJECT --work WORK [--k 2] [--name sandwich]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from augment import COPIED, LABELS, cell_table, compare, settings_of  # noqa: E402
from sst2 import OUT, run_stage, write_md  # noqa: E402

from dynastudio.core.project import Project  # noqa: E402


def copy_to_width(src: Project, dst: Path, train: dict) -> None:
    """The source project up to its width stage (its width model too), with `train` changed."""
    dst.mkdir(parents=True)
    for part in (*COPIED, "models/width"):
        s = src.root / part
        (shutil.copytree if s.is_dir() else shutil.copy2)(s, dst / part)
    cfg = json.loads((dst / "project.json").read_text())
    cfg["train"].update(train)
    cfg["name"] = f"{cfg.get('name', 'project')}-{dst.name}"
    (dst / "project.json").write_text(json.dumps(cfg, indent=2))
    state = json.loads((src.root / "state.json").read_text())
    state["stages"] = {k: v for k, v in state["stages"].items() if k in ("finetune", "rewire", "width")}
    (dst / "state.json").write_text(json.dumps(state, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--name", default="sandwich")
    a = ap.parse_args()
    src = Project.open(Path(a.project))
    if not src.is_done("depth"):
        raise SystemExit(f"{a.project}: the depth stage is not done")
    work = Path(a.work)
    plain, arm = work / "plain", work / "sandwich"
    if not plain.exists():
        shutil.copytree(src.root, plain, ignore=shutil.ignore_patterns("checkpoints", "latency.json", "search*"))
    measured = {}
    if not arm.exists():
        copy_to_width(src, arm, {"sandwich": a.k})
    for stage in ("depth", "evaluate"):
        if not Project.open(arm).is_done(stage):
            measured[stage] = run_stage(arm, stage)
    projects = {"plain": Project.open(plain), "sandwich": Project.open(arm)}
    metric, scores, ci = compare(projects, "plain", "sandwich", a.boot)
    report = {
        "argv": "python bench/sandwich.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "source": str(src.root),
        "metric": metric,
        "k": a.k,
        "settings": settings_of(src),
        "scores": scores,
        "sandwich_minus_plain_ci95": ci,
        "depth_seconds": {k: p.stage_info("depth").get("seconds") for k, p in projects.items()},
        "depth_steps": {k: p.stage_info("depth").get("steps") for k, p in projects.items()},
        "measured_here": measured,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(report, indent=2))
    render(report, OUT / f"{a.name}.md")


def render(r: dict, path: Path) -> None:
    md = [
        f"# Sandwich shapes in the depth stage (K = {r['k']}) against none",
        "",
        f"`{r['argv']}` (finished {r['finished']})",
        "",
        f"The plain arm is `{r['source']}` as it was (its depth stage ran before, with the same settings and "
        "sandwich 0; it was not run again). The sandwich arm starts from the same width model and runs the depth "
        f"stage with {r['k']} random per-layer shapes per step beside the 12 cells.",
        "",
        "## Settings",
        "",
    ]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in r["settings"].items()]
    md += ["", f"## The 12 cells on dev ({r['metric']}), sandwich minus plain", ""]
    table, diffs = cell_table(r["scores"], r["sandwich_minus_plain_ci95"], "plain", "sandwich")
    md += table
    all_d = [100 * (r["scores"]["sandwich"][k] - r["scores"]["plain"][k]) for k in LABELS]
    below = [k for k in LABELS if r["sandwich_minus_plain_ci95"][k][1] < 0]
    md += [
        "",
        f"Over all 12 cells: {np.mean(all_d):+.2f} points on average; cells whose interval lies below 0: "
        f"{', '.join(below) if below else 'none'}.",
        "",
        "## Cost",
        "",
        f"Depth stage: plain {r['depth_seconds']['plain']:.0f} s, sandwich {r['depth_seconds']['sandwich']:.0f} s "
        f"({r['depth_seconds']['sandwich'] / r['depth_seconds']['plain']:.2f}x), {r['depth_steps']['sandwich']} "
        "steps each.",
    ]
    write_md(md, r, path)


if __name__ == "__main__":
    main()
