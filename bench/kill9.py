"""Kill -9 anywhere, at scale: SIGKILL `dynastudio run` at random moments across every stage, resume each time,
and compare the finished project with an uninterrupted run of the same seed.

    python bench/kill9.py [--kills 50] [--seed 0] [--every 2]

A tiny random BERT on a tiny task (built here, as the tests build it), `checkpoint_every` = `--every` steps.
Each round makes a fresh project and kills the run at a moment drawn uniformly between 3.5 s (about when the
interpreter has started) and the length of an uninterrupted run, again and again until an attempt finishes
by itself; rounds go on until `--kills` kills. Reported: kills, resumed (the next attempt started from the
saved state and the round finished), equal grids and equal weights per round, the worst number of steps
redone after a kill, the stages the kills landed in, and temporary files left. Results go to
bench/results/kill9.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=2)
    a = ap.parse_args(argv)
    from dynastudio.core.prepare import new_project
    from helpers import make_tiny_model_dir, tiny_project_config, tiny_sentences, write_tsv
    from kill_harness import grid, kill_until_done, model_difference, run_once, stale_temps

    rng = random.Random(a.seed)
    rounds = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="dynastudio-kill9-") as tmp:
        tmp = Path(tmp)
        model = make_tiny_model_dir(tmp / "model")
        train = write_tsv(tmp / "train.tsv", tiny_sentences(192, 1))
        dev = write_tsv(tmp / "dev.tsv", tiny_sentences(64, 2))
        cfg = tiny_project_config(model, train, dev, checkpoint_every=a.every)
        ref = new_project(tmp / "ref", cfg)
        whole = run_once(ref.root, None)
        reference = grid(ref.root)
        total = 0
        while total < a.kills:
            i = len(rounds)
            p = new_project(tmp / f"cut{i}", cfg)
            rep = kill_until_done(p.root, rng, (3.5, max(4.0, whole.seconds)))
            r = {
                "round": i,
                "kills": rep.kills,
                "attempts": len(rep.attempts),
                "finished": not rep.attempts[-1].killed and rep.attempts[-1].returncode == 0,
                "equal_grid": grid(p.root) == reference,
                "weights_max_diff": model_difference(p.root, ref.root),
                "redone_steps": rep.redone_steps(),
                "stages_killed": rep.stages_killed(),
                "temps_left": stale_temps(p.root),
            }
            rounds.append(r)
            total += rep.kills
            print(
                f"round {i}: {rep.kills} kills in {r['stages_killed']}, redone {r['redone_steps']}, "
                f"equal grid {r['equal_grid']}, weights diff {r['weights_max_diff']:.1e}, temps {r['temps_left']}",
                flush=True,
            )
    stages: dict[str, int] = {}
    for r in rounds:
        for s, n in r["stages_killed"].items():
            stages[s] = stages.get(s, 0) + n
    redone = [x for r in rounds for x in r["redone_steps"]]
    summary = {
        "kills": total,
        "rounds": len(rounds),
        "resumed_and_finished_rounds": sum(r["finished"] for r in rounds),
        "equal_grids": sum(r["equal_grid"] for r in rounds),
        "equal_weights": sum(r["weights_max_diff"] == 0.0 for r in rounds),
        "worst_redone_steps": max(redone) if redone else 0,
        "checkpoint_every": a.every,
        "kills_in_training_steps": len(redone),
        "kills_by_stage": stages,
        "temps_left": sum(len(r["temps_left"]) for r in rounds),
        "uninterrupted_seconds": whole.seconds,
        "minutes": (time.time() - t0) / 60,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    print(json.dumps(summary, indent=2))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "kill9.json").write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2))
    md = [
        f"SIGKILL at random moments: {total} kills over {len(rounds)} rounds (checkpoint every {a.every} steps).",
        "",
        "| kills | rounds finished | equal grids | equal weights | worst redone steps | temp files left |",
        "|---|---|---|---|---|---|",
        f"| {total} | {summary['resumed_and_finished_rounds']}/{len(rounds)} | {summary['equal_grids']}/{len(rounds)} | "
        f"{summary['equal_weights']}/{len(rounds)} | {summary['worst_redone_steps']} | {summary['temps_left']} |",
        "",
        "Kills by the stage they landed in: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items())) + ".",
    ]
    (out / "kill9.md").write_text("\n".join(md) + "\n")
    return 0 if summary["equal_grids"] == len(rounds) == summary["resumed_and_finished_rounds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
