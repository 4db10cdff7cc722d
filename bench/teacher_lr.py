"""The teacher's learning rate: a small grid of rates x epochs against the short trial (train.teacher_lr null), on
one project's data, each teacher trained from the same start by the finetune stage itself (so each keeps its best
checkpoint on the held-out train rows, as every teacher now does).

For each setting: a copy of the project (its tokenized data, no models) with train.teacher_lr and teacher_epochs
set, `run --until finetune`, then the teacher's dev score (reported only: dev chooses nothing here; the trial and
the best-checkpoint choice use the held-out train rows), its held-out score, the step it kept, the stage's wall
time, and for the trial its choice and cost.

    python bench/teacher_lr.py PROJECT_DIR --work DIR [--rates 2e-5 5e-5 1e-4 2e-4] [--epochs 2 3] [--name NAME]
Writes bench/results/teacher_lr[_NAME].{md,json}. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"

from dynastudio.core import jobs  # noqa: E402
from dynastudio.core.events import null_sink  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.requests import RunRequest  # noqa: E402


def teacher(src: Path, work: Path, lr: float | None, epochs: float) -> dict:
    """Train one teacher in a copy of `src` with these settings; what the finetune stage recorded."""
    name = f"lr{'auto' if lr is None else f'{lr:g}'}_e{epochs:g}"
    dst = work / name
    if not (dst / "project.json").exists():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(
            src, dst, ignore=shutil.ignore_patterns("models", "checkpoints", "run", "metrics.jsonl", "*.safetensors")
        )
        (dst / "state.json").unlink(missing_ok=True)
        raw = json.loads((dst / "project.json").read_text())
        raw["train"].update(teacher_lr=lr, teacher_epochs=epochs)
        (dst / "project.json").write_text(json.dumps(raw, indent=2))
    project = Project.open(dst)
    t0 = time.time()
    if not project.is_done("finetune"):
        jobs.run("run", project, RunRequest(until="finetune"), null_sink, None)
    info = Project.open(dst).stage_info("finetune")
    return {
        "setting": name,
        "teacher_lr": lr,
        "teacher_epochs": epochs,
        "dev_score": info["metrics"]["score"],
        "kept": info.get("teacher_kept"),
        "trial": info.get("teacher_lr_trial"),
        "stage_seconds": round(info["seconds"], 1),
        "wall_seconds_this_invocation": round(time.time() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project")
    ap.add_argument("--work", required=True)
    ap.add_argument("--rates", nargs="+", type=float, default=[2e-5, 5e-5, 1e-4, 2e-4])
    ap.add_argument("--epochs", nargs="+", type=float, default=[2.0, 3.0])
    ap.add_argument(
        "--trial-epochs", type=float, default=None, help="the trial's teacher epochs (default: the largest)"
    )
    ap.add_argument("--name", default="")
    ap.add_argument("--no-trial", action="store_true", help="only the grid (the trial's row can be added later)")
    a = ap.parse_args()
    src, work = Path(a.project), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    rows = [teacher(src, work, lr, e) for e in a.epochs for lr in a.rates]
    if not a.no_trial:
        rows.append(teacher(src, work, None, a.trial_epochs or max(a.epochs)))
    for r in rows:
        print(json.dumps({k: r[k] for k in ("setting", "dev_score", "stage_seconds")}), flush=True)
    p = Project.open(src)
    result = {
        "command": "python bench/teacher_lr.py " + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "project": {
            "task": p.config.data.task or p.config.data.kind,
            "train": {
                k: v
                for k, v in vars(p.config.train).items()
                if k in ("max_train_examples", "importance_examples", "batch_size", "max_seq_length", "seed")
            },
        },
        "rows": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started),
    }
    stem = "teacher_lr" + (f"_{a.name}" if a.name else "")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    grid = [r for r in rows if r["teacher_lr"] is not None]
    best = max(grid, key=lambda r: r["dev_score"])
    lines = [
        "# The teacher's learning rate: a grid against the short trial (bench/teacher_lr.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}, {result['seconds']} s), {result['machine']}; load "
        f"average before {result['load_average_before']}, after {result['load_average_after']}. Settings: "
        f"{result['project']}. Every teacher keeps its best checkpoint on the held-out train rows; dev only reports.",
        "",
        "| teacher lr | epochs | dev score | kept step (of last) | held-out score kept | stage s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        k = r["kept"] or {}
        lr = (
            "trial: " + f"{r['trial']['chosen']:g}"
            if r["teacher_lr"] is None and r["trial"]
            else f"{r['teacher_lr']:g}"
        )
        lines.append(
            f"| {lr} | {r['teacher_epochs']:g} | {100 * r['dev_score']:.2f} | {k.get('step', '-')} ({k.get('last_step', '-')}) "
            f"| {100 * k.get('heldout_score', float('nan')):.2f} | {r['stage_seconds']:.0f} |"
        )
    trial = rows[-1] if rows[-1]["teacher_lr"] is None else None
    if trial is None:
        (OUT / f"{stem}.md").write_text(
            "\n".join([*lines, "", f"Best of the grid on dev: {best['setting']} at {100 * best['dev_score']:.2f}."])
            + "\n"
        )
        return
    lines += [
        "",
        f"Best of the grid on dev: {best['setting']} at {100 * best['dev_score']:.2f}; the trial's teacher "
        f"{100 * trial['dev_score']:.2f} ({100 * (trial['dev_score'] - best['dev_score']):+.2f} points).",
    ]
    if trial["trial"]:
        t = trial["trial"]
        lines.append(
            f"The trial: {', '.join(f'{k}: {100 * v:.2f}' for k, v in t['candidates'].items())} on "
            f"{t.get('heldout_rows')} held-out train rows after {t.get('steps_each')} steps each on {t.get('rows')} "
            f"rows."
        )
        if t.get("race"):
            lines.append(
                "Then a whole teacher at each of the best "
                f"{len(t['race'])}: "
                + ", ".join(
                    f"{k}: {100 * v['heldout_score']:.2f} held-out ({v['seconds']:.0f} s)" for k, v in t["race"].items()
                )
                + f"; kept {t['chosen']:g}. The trial's short runs took {t.get('trial_seconds')} s, all of it "
                f"{t.get('seconds')} s (the stage: {trial['stage_seconds']:.0f} s)."
            )
        else:
            lines.append(f"The trial took {t.get('seconds')} s.")
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
