"""Augmentation against none, from the same teacher and rewired model: the 12 cells, paired bootstrap per cell.

Given a project whose finetune and rewire stages are done, this copies it twice into a work folder (teacher, rewired
model, importance scores, input cache, settings), sets train.augment to 0 in one and to N copies in the other
(--copies; default: the project's default for its size), runs width, depth and evaluate in each as child
`dynastudio run`s, one after the other, and compares the grids on dev with a 95 % paired bootstrap interval of each
cell's difference. Also the time each stage took in each arm, and what making the augmented rows cost.
Writes bench/results/<name>.{md,json} (--name, default augment).

    python bench/augment.py --project PROJECT --work WORK_FOLDER [--copies N] [--name NAME]
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
from depth_rule import cell_logits  # noqa: E402
from sst2 import DEPTHS, OUT, WIDTHS, mib, run_stage, teacher_metrics, write_md  # noqa: E402

from dynastudio.core.metrics import compute_metric  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402

COPIED = (
    "project.json",
    "task.json",
    "tokenizer",
    "cache",
    "importance.safetensors",
    "models/teacher",
    "models/rewired",
)
LABELS = [f"w{w:g}_d{d:g}" for d in DEPTHS for w in WIDTHS]


def copy_arm(src: Project, dst: Path, train: dict) -> None:
    """The source project up to its rewire stage, with the `train` settings changed."""
    dst.mkdir(parents=True)
    for part in COPIED:
        s = src.root / part
        (shutil.copytree if s.is_dir() else shutil.copy2)(s, dst / part)
    for stale in (dst / "cache").glob("augment*"):
        (shutil.rmtree if stale.is_dir() else Path.unlink)(stale)  # each arm makes its own (and is timed)
    cfg = json.loads((dst / "project.json").read_text())
    # the int8-aware stage's model is not the one compared (evaluate scores the model before it): not run
    cfg["train"].update({"int8_epochs": 0.0, **train})
    cfg["name"] = f"{cfg.get('name', 'project')}-{dst.name}"
    (dst / "project.json").write_text(json.dumps(cfg, indent=2))
    state = json.loads((src.root / "state.json").read_text())
    state["stages"] = {k: v for k, v in state["stages"].items() if k in ("finetune", "rewire")}
    (dst / "state.json").write_text(json.dumps(state, indent=2))


def run_arms(src: Project, work: Path, arms: dict[str, dict]) -> tuple[dict[str, Project], dict]:
    """Each arm's copy of `src` (made when missing) trained through evaluate, one child run after another."""
    measured: dict[str, dict] = {}
    for arm, train in arms.items():
        if not (work / arm / "project.json").exists():
            copy_arm(src, work / arm, train)
        for stage in ("width", "depth", "evaluate"):
            if not Project.open(work / arm).is_done(stage):
                measured.setdefault(arm, {})[stage] = run_stage(work / arm, stage)
    return {arm: Project.open(work / arm) for arm in arms}, measured


def paired_differences(metric: str, other: np.ndarray, base: np.ndarray, y: np.ndarray, boot: int) -> np.ndarray:
    """The metric of `other` minus that of `base` (two predictions of the same rows `y`) on `boot` resamples of the
    rows, seeded (the same resamples on every call): a paired bootstrap."""
    idx = np.random.default_rng(0).integers(0, len(y), size=(boot, len(y)))
    return np.array(
        [compute_metric(metric, other[i], y[i])["score"] - compute_metric(metric, base[i], y[i])["score"] for i in idx]
    )


def compare(projects: dict[str, Project], base: str, other: str, boot: int) -> tuple[str, dict, dict]:
    """(metric, each arm's dev score per cell, the 95 % paired-bootstrap interval of other - base per cell)."""
    logits = {arm: cell_logits(p) for arm, p in projects.items()}
    y, metric = logits[base][1], logits[base][2]
    scores = {arm: {k: compute_metric(metric, v, y)["score"] for k, v in lg[0].items()} for arm, lg in logits.items()}
    ci = {}
    for k in scores[base]:
        d = paired_differences(metric, logits[other][0][k], logits[base][0][k], y, boot)
        ci[k] = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
    return metric, scores, ci


def stage_facts(projects: dict[str, Project]) -> dict:
    """Each arm's width and depth stage: wall seconds and optimizer steps, as state.json records them."""
    return {
        f"stage_{fact}": {
            arm: {s: p.stage_info(s).get(fact) for s in ("width", "depth")} for arm, p in projects.items()
        }
        for fact in ("seconds", "steps")
    }


def settings_of(src: Project) -> dict:
    t = src.config.train
    return {
        "model": src.config.model,
        "task": src.config.data.task,
        "train_rows": t.max_train_examples,
        "seq_len": t.max_seq_length,
        "teacher_epochs": t.teacher_epochs,
        "width_epochs": t.width_epochs,
        "depth_epochs": t.depth_epochs,
        "width_lr": t.width_lr,
        "depth_lr": t.depth_lr,
        "width_l1_l2": [t.width_l1, t.width_l2],
        "depth_l1_l2": [t.depth_l1, t.depth_l2],
        "depth_rule": t.depth_rule,
        "seed": t.seed,
    }


def cell_table(scores: dict, ci: dict, base: str, other: str) -> tuple[list[str], list[float]]:
    """The 12 cells' rows (markdown) and other - base over the reduced-depth cells, in points."""
    pts = lambda v: 100 * v  # noqa: E731
    md = [f"| width | depth | {base} | {other} | {other} - {base} | 95 % interval |", "|---|---|---|---|---|---|"]
    for k in LABELS:
        w, d = k[1:].split("_d")
        md.append(
            f"| {w} | {d} | {pts(scores[base][k]):.2f} | {pts(scores[other][k]):.2f} | "
            f"{pts(scores[other][k] - scores[base][k]):+.2f} | {pts(ci[k][0]):+.2f} to {pts(ci[k][1]):+.2f} |"
        )
    reduced = [k for k in LABELS if not k.endswith("_d1")]
    diffs = [pts(scores[other][k] - scores[base][k]) for k in reduced]
    up, down = sum(ci[k][0] > 0 for k in reduced), sum(ci[k][1] < 0 for k in reduced)
    md += [
        "",
        f"Over the {len(reduced)} reduced-depth cells {other} minus {base} is **{np.mean(diffs):+.2f} points** on "
        f"average (from {min(diffs):+.2f} to {max(diffs):+.2f}; {other} higher in {sum(d > 0 for d in diffs)}); "
        f"the interval is above 0 in {up} and below 0 in {down}.",
    ]
    return md, diffs


def measured_lines(report: dict) -> list[str]:
    if not report.get("measured_here"):
        return []
    md = ["", "Child runs measured by this script (wall time, peak memory):", ""]
    for arm, stages in report["measured_here"].items():
        md.append(f"- {arm}: " + ", ".join(f"{k} {v['seconds']:.0f} s, {mib(v)} MiB" for k, v in stages.items()))
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", help="a project whose finetune and rewire stages are done")
    ap.add_argument("--work", help="the folder for the two arms")
    ap.add_argument("--copies", type=int, help="copies per row in the augmented arm (default: the project's default)")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--name", default="augment", help="the results file stem")
    ap.add_argument("--render-only", action="store_true", help="re-render the .md from the saved JSON")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((OUT / f"{a.name}.json").read_text()), OUT / f"{a.name}.md")
        return
    if not (a.project and a.work):
        ap.error("--project and --work are needed")
    src = Project.open(Path(a.project))
    projects, measured = run_arms(src, Path(a.work), {"plain": {"augment": 0}, "augmented": {"augment": a.copies}})
    metric, scores, ci = compare(projects, "plain", "augmented", a.boot)
    report = {
        "argv": "python bench/augment.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "source": str(src.root),
        "metric": metric,
        "settings": settings_of(src),
        "augment": projects["augmented"].stage_info("width").get("augment"),
        "teacher": teacher_metrics(src)["score"],
        "scores": scores,
        "augmented_minus_plain_ci95": ci,
        **stage_facts(projects),
        "measured_here": measured,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(report, indent=2))
    render(report, OUT / f"{a.name}.md")


def render(report: dict, path: Path) -> None:
    s, sc, ci, aug = report["settings"], report["scores"], report["augmented_minus_plain_ci95"], report["augment"]
    md = [
        "# Augmentation against none, from the same teacher and rewired model",
        "",
        f"`{report['argv']}` (finished {report['finished']})",
        "",
        "## Settings",
        "",
    ]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in s.items()]
    md += [
        f"- augmentation: {aug['copies']} {'copy' if aug['copies'] == 1 else 'copies'} of each of "
        f"{aug['source_rows']:,} student rows, {aug['rows']:,} rows made in {aug['seconds']:.0f} s; replacements: {aug['source']}",
        "",
        f"Teacher dev {report['metric']}: {100 * report['teacher']:.2f}. The two columns differ only in the rows the "
        "width and depth stages learn from (the same settings and epochs, so the augmented arm takes more steps).",
        "",
    ]
    md += cell_table(sc, ci, "plain", "augmented")[0]
    md += ["", "| stage | plain | augmented | ratio |", "|---|---|---|---|"]
    for st in ("width", "depth"):
        p_, q_ = report["stage_seconds"]["plain"][st], report["stage_seconds"]["augmented"][st]
        sp, sq = report["stage_steps"]["plain"][st], report["stage_steps"]["augmented"][st]
        md.append(f"| {st} | {p_:.0f} s ({sp} steps) | {q_:.0f} s ({sq} steps) | {q_ / p_:.1f}x |")
    md += measured_lines(report)
    write_md(md, report, path)


if __name__ == "__main__":
    main()
