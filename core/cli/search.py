"""`dynastudio search`: the best sub-network of any shape under a latency budget, headless."""

from __future__ import annotations

import sys
from pathlib import Path

from ..store import LATENCY_PRECISIONS
from ..store.shapes import describe_shape
from .progress import print_logs, run_stoppable


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "search",
        help="search depth, per-layer heads and neurons for the best sub-network within a latency budget",
    )
    s.add_argument("dir")
    s.add_argument("--budget-ms", type=float, required=True, metavar="MS", help="latency budget per batch")
    s.add_argument("--device", help="a device whose layer shapes a kit timed (default: this machine)")
    s.add_argument("--precision", choices=LATENCY_PRECISIONS, default="fp32", help="the precision timed (default fp32)")
    s.add_argument("--generations", type=int, default=12)
    s.add_argument("--population", type=int, default=20)
    s.add_argument("--rows", type=int, default=1000, help="held-out train rows each shape is scored on")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--no-measure",
        action="store_true",
        help="on this machine: keep the predicted latency, do not time the best shapes for real",
    )
    s.set_defaults(func=cmd_search)


def cmd_search(a) -> int:
    from .. import jobs
    from ..project import Project
    from .results import _threads

    _threads("search")
    project = Project.open(Path(a.dir))
    request = jobs.SearchRequest(
        a.budget_ms, a.device, a.precision, a.generations, a.population, a.rows, a.seed, not a.no_measure
    )
    out = run_stoppable("search", project, request, print_logs, "stopped; run the same command again to resume")
    if out is None:
        return 130
    p = out["precision"]
    chosen = next(x for x in out["points"] if x["label"] == out["chosen"])
    measured = chosen.get(f"latency_{p}_ms")
    ms = f"{measured:.2f} ms measured, " if measured is not None else ""
    print(
        f"best within {out['budget_ms']:g} ms: {chosen['label']} ({chosen['layers']} layers; "
        + describe_shape(chosen["searched"], layers=False)
        + f"): {ms}{chosen[f'predicted_{p}_ms']:.2f} ms predicted; held-out {chosen['metric']} "
        f"{chosen['search_score']:.4f}, dev {chosen['value']:.4f} (dev reported only)"
    )
    print(
        f"{out['scored']} shapes scored in {out['search_seconds'] / 60:.1f} min ({out['seconds'] / 60:.1f} min in all); "
        f"`dynastudio report {project.root}` lists the searched points beside the grid; export one with "
        f"`dynastudio export {project.root} --searched {chosen['label']} --format onnx --out DIR`",
        file=sys.stdout,
    )
    return 0
