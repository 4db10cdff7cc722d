"""The order of the distilling stages: the paper's (width, then width and depth) against joint (every width and
depth from the teacher at once), from the same teacher and rewired model, with as many student updates.

Given a project whose finetune and rewire stages are done, this copies it twice into a work folder (as
bench/augment.py does), sets train.stage_order to paper in one and joint in the other, runs width, depth and
evaluate in each as child `dynastudio run`s, one after the other, and compares the 12 cells on dev with a 95 %
paired bootstrap interval of each difference. Writes bench/results/<name>.{md,json} (--name, default stage_order).

    python bench/stage_order.py --project PROJECT --work WORK_FOLDER [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augment import cell_table, compare, measured_lines, run_arms, settings_of, stage_facts  # noqa: E402
from sst2 import OUT, teacher_metrics, write_md  # noqa: E402

from dynastudio.core.project import Project  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", help="a project whose finetune and rewire stages are done")
    ap.add_argument("--work", help="the folder for the two arms")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--name", default="stage_order", help="the results file stem")
    ap.add_argument("--render-only", action="store_true", help="re-render the .md from the saved JSON")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((OUT / f"{a.name}.json").read_text()), OUT / f"{a.name}.md")
        return
    if not (a.project and a.work):
        ap.error("--project and --work are needed")
    src = Project.open(Path(a.project))
    projects, measured = run_arms(
        src, Path(a.work), {"paper": {"stage_order": "paper"}, "joint": {"stage_order": "joint"}}
    )
    metric, scores, ci = compare(projects, "paper", "joint", a.boot)
    report = {
        "argv": "python bench/stage_order.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "source": str(src.root),
        "metric": metric,
        "settings": settings_of(src),
        "teacher": teacher_metrics(src)["score"],
        "augment": {
            arm: p.stage_info("width").get("augment") or p.stage_info("depth").get("augment")
            for arm, p in projects.items()
        },
        "scores": scores,
        "joint_minus_paper_ci95": ci,
        **stage_facts(projects),
        "measured_here": measured,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(report, indent=2))
    render(report, OUT / f"{a.name}.md")


def augment_words(aug: dict | None) -> str:
    """What an arm's width or depth stage learned from besides the labelled rows, in words."""
    if not aug or not aug.get("copies"):
        return "none"
    copies = f"{aug['copies']} {'copy' if aug['copies'] == 1 else 'copies'}"
    return (
        f"{copies} of each of {aug['source_rows']:,} student rows, {aug['rows']:,} rows; replacements: {aug['source']}"
    )


def render(report: dict, path: Path) -> None:
    md = [
        "# Stage order: the paper's two stages against one joint stage, from the same teacher and rewired model",
        "",
        f"`{report['argv']}` (finished {report['finished']})",
        "",
        "## Settings",
        "",
    ]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in report["settings"].items()]
    md += [f"- augmentation, {arm}: {augment_words(aug)}" for arm, aug in report.get("augment", {}).items()]
    md += [
        "",
        f"Teacher dev {report['metric']}: {100 * report['teacher']:.2f}. paper: the width stage (width epochs, its loss "
        "weights) then the depth stage from the width model; joint: no width stage, the depth stage from the rewired "
        "teacher for width + depth epochs with the depth stage's loss weights and learning rate (the same number of "
        "optimizer steps on the same rows).",
        "",
    ]
    md += cell_table(report["scores"], report["joint_minus_paper_ci95"], "paper", "joint")[0]
    md += ["", "| stage | paper | joint |", "|---|---|---|"]
    for st in ("width", "depth"):
        cells = []
        for arm in ("paper", "joint"):
            secs, steps = report["stage_seconds"][arm][st], report["stage_steps"][arm][st]
            cells.append(f"{secs:.0f} s ({steps} steps)" if steps else "skipped")
        md.append(f"| {st} | {cells[0]} | {cells[1]} |")
    md += measured_lines(report)
    write_md(md, report, path)


if __name__ == "__main__":
    main()
