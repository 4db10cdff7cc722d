"""Which layers should a reduced depth drop? The two depth rules from the same teacher and the same width-stage model.

`keep-last` (the default) drops layer 0, the first layer over the embeddings; `paper` (the rule of the paper's
released code) drops the last layer at every reduced depth. Given a project whose width stage is done, this copies it
(teacher, rewired and width models, importance scores, input cache, settings) into a work folder with the other
rule, runs the depth and evaluate stages there as a child `dynastudio run`, and compares the two grids cell by
cell on dev, with a 95 % paired bootstrap interval of each difference. Writes bench/results/<name>.{md,json} (--name, default depth_rule).

    python bench/depth_rule.py --project PROJECT --work OTHER_RULE_FOLDER
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
from sst2 import DEPTHS, OUT, WIDTHS, mib, run_stage, teacher_metrics, write_md  # noqa: E402

from dynastudio.core.dynamic import subnet_grid  # noqa: E402
from dynastudio.core.evaluate import predict  # noqa: E402
from dynastudio.core.metrics import compute_metric  # noqa: E402
from dynastudio.core.prepare import prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.store import final_model_name  # noqa: E402

COPIED = (
    "project.json",
    "task.json",
    "tokenizer",
    "cache",
    "importance.safetensors",
    "models/teacher",
    "models/rewired",
    "models/width",
)


def copy_for_other_rule(src: Project, dst: Path, rule: str) -> None:
    """The source project up to its width stage, with `rule` as its depth rule."""
    dst.mkdir(parents=True)
    for part in COPIED:
        s = src.root / part
        (shutil.copytree if s.is_dir() else shutil.copy2)(s, dst / part)
    cfg = json.loads((dst / "project.json").read_text())
    cfg["train"]["depth_rule"] = rule
    cfg["name"] = f"{cfg.get('name', 'project')}-{rule}"
    (dst / "project.json").write_text(json.dumps(cfg, indent=2))
    state = json.loads((src.root / "state.json").read_text())
    state["stages"] = {k: v for k, v in state["stages"].items() if k in ("finetune", "rewire", "width")}
    (dst / "state.json").write_text(json.dumps(state, indent=2))


def cell_logits(project: Project) -> tuple[dict, np.ndarray, str]:
    ws = prepare_inputs(project)
    model = project.load_model(final_model_name(project))
    t = project.config.train
    out = {
        s.label: predict(model, ws.dev, s, t.depth_rule, t.eval_batch_size, ws.pad_id, ws.device)
        for s in subnet_grid(WIDTHS, DEPTHS)
    }
    return out, np.asarray(ws.dev.labels), ws.task.metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", help="a project whose width and depth stages are done")
    ap.add_argument("--work", help="the folder for the copy with the other depth rule")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--name", default="depth_rule", help="the results file stem")
    ap.add_argument("--render-only", action="store_true", help="re-render the .md from the saved JSON")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((OUT / f"{a.name}.json").read_text()), OUT / f"{a.name}.md")
        return
    if not (a.project and a.work):
        ap.error("--project and --work are needed")
    src = Project.open(Path(a.project))
    rule = src.config.train.depth_rule
    other = "paper" if rule == "keep-last" else "keep-last"
    work = Path(a.work)
    if not (work / "project.json").exists():
        copy_for_other_rule(src, work, other)
    measured = {}
    for stage in ("depth", "evaluate"):
        if not Project.open(work).is_done(stage):
            measured[stage] = run_stage(work, stage)
    dst = Project.open(work)
    logits = {rule: cell_logits(src), other: cell_logits(dst)}
    y, metric = logits[rule][1], logits[rule][2]
    scores = {r: {k: compute_metric(metric, v, y)["score"] for k, v in lg[0].items()} for r, lg in logits.items()}
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), size=(a.boot, len(y)))
    ci = {}
    for k in scores[rule]:
        a_, b_ = logits["keep-last"][0][k], logits["paper"][0][k]
        d = [compute_metric(metric, a_[i], y[i])["score"] - compute_metric(metric, b_[i], y[i])["score"] for i in idx]
        ci[k] = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
    t = src.config.train
    report = {
        "argv": "python bench/depth_rule.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "source": str(src.root),
        "source_rule": rule,
        "metric": metric,
        "settings": {
            "model": src.config.model,
            "task": src.config.data.task,
            "train_rows": src.config.train.max_train_examples,
            "seq_len": t.max_seq_length,
            "teacher_epochs": t.teacher_epochs,
            "width_epochs": t.width_epochs,
            "depth_epochs": t.depth_epochs,
            "depth_lr": t.depth_lr,
            "depth_l1_l2": [t.depth_l1, t.depth_l2],
            "seed": t.seed,
        },
        "teacher": teacher_metrics(src)["score"],
        "scores": scores,
        "keep_last_minus_paper_ci95": ci,
        "depth_stage_seconds": {
            rule: src.stage_info("depth").get("seconds"),
            other: dst.stage_info("depth").get("seconds"),
        },
        "measured_here": measured,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(report, indent=2))
    render(report, OUT / f"{a.name}.md")


def render(report: dict, path: Path) -> None:
    s, sc, ci = report["settings"], report["scores"], report["keep_last_minus_paper_ci95"]
    pts = lambda v: 100 * v  # noqa: E731
    labels = [f"w{w:g}_d{d:g}" for d in DEPTHS for w in WIDTHS]
    reduced = [k for k in labels if not k.endswith("_d1")]
    diffs = [pts(sc["keep-last"][k] - sc["paper"][k]) for k in reduced]
    md = [
        "# Depth rule: keep-last against paper, from the same teacher and width-stage model",
        "",
        f"`{report['argv']}` (finished {report['finished']})",
        "",
        "## Settings",
        "",
    ]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in s.items()]
    md += [
        "",
        f"Teacher dev {report['metric']}: {pts(report['teacher']):.2f}. Only the depth stage and the evaluation "
        "differ between the two columns.",
        "",
        "| width | depth | keep-last (drops layer 0) | paper (drops the last layer) | keep-last - paper | 95 % interval |",
        "|---|---|---|---|---|---|",
    ]
    for k in labels:
        w, d = k[1:].split("_d")
        md.append(
            f"| {w} | {d} | {pts(sc['keep-last'][k]):.2f} | {pts(sc['paper'][k]):.2f} | "
            f"{pts(sc['keep-last'][k] - sc['paper'][k]):+.2f} | {pts(ci[k][0]):+.2f} to {pts(ci[k][1]):+.2f} |"
        )
    sig = [k for k in reduced if ci[k][0] > 0 or ci[k][1] < 0]
    md += [
        "",
        f"Over the {len(reduced)} reduced-depth cells keep-last minus paper is {np.mean(diffs):+.2f} points on "
        f"average (from {min(diffs):+.2f} to {max(diffs):+.2f}; keep-last higher in {sum(d > 0 for d in diffs)}); "
        f"the interval excludes 0 in {len(sig)}" + (f" ({', '.join(sig)})" if sig else "") + ".",
        "",
        "Depth-stage wall time: "
        + ", ".join(f"{r} {v:.0f} s" for r, v in report["depth_stage_seconds"].items() if v)
        + ".",
    ]
    if report.get("measured_here"):
        md += [
            "",
            "Measured by this script: "
            + ", ".join(f"{k} {v['seconds']:.0f} s, peak {mib(v)} MiB" for k, v in report["measured_here"].items())
            + ".",
        ]
    write_md(md, report, path)


if __name__ == "__main__":
    main()
