"""SST-2 quality report: the DynaBERT grid against baselines measured in the same run (MiniLM, real data).

Baselines, every width x depth cell:
  A  the fine-tuned teacher sliced, no rewiring, no further training
  B  the rewired teacher sliced, no further training
  C  DynaBERT without rewiring (the paper's ablation): same teacher, same stages, same data

Every training stage runs as a child `dynastudio run --until STAGE` so its wall time and peak
memory (max RSS) are measured per stage. Writes bench/results/sst2.{md,json,png}.

    python bench/sst2.py                         # default: about 1.5 hours on 2 CPU cores
    python bench/sst2.py --skip-c                # without baseline C: about 50 minutes
    python bench/sst2.py --train-examples 67349 --width-epochs 3 --depth-epochs 3 --seq 128   # a larger run for a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dynastudio.core.config import DataConfig, ProjectConfig, profile_config  # noqa: E402
from dynastudio.core.dynamic import SubnetSpec, subnet_grid  # noqa: E402
from dynastudio.core.evaluate import evaluate_specs, predict  # noqa: E402
from dynastudio.core.prepare import new_project, prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.stages import pending_stages  # noqa: E402
from dynastudio.core.store import final_model_name  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
OUT = ROOT / "bench" / "results"
WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEPTHS = (1.0, 0.75, 0.5)
TRAINING_STAGES = ("finetune", "width", "depth", "finetune-subnets")  # the stages whose "steps" are optimizer steps


# The child reports its own peak: /proc/self/status VmHWM belongs to the address space made at exec.
# (The ru_maxrss that wait4 returns is no good here: Linux carries the forking parent's RSS into the
# child's maxrss across exec, so a child of a big parent reports at least the parent's size.)
_PEAK_WRAPPER = """
import atexit, runpy, sys
out = sys.argv[1]
def _peak():
    import resource
    try:
        with open('/proc/self/status') as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
        # a run's stages in child processes of their own: the largest of them counts too (Linux: KiB)
        kb = max(kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        from dynastudio.core import malloc
        with open(out, 'w') as f:
            f.write(f"{kb}\\n{malloc.active() or 'glibc'}")
    except (OSError, StopIteration):
        pass
atexit.register(_peak)
sys.argv = ['dynastudio'] + sys.argv[2:]
runpy.run_module('dynastudio.core.cli', run_name='__main__')
"""


def run_stage(project: Path, stage: str, extra: tuple[str, ...] = ()) -> dict:
    """`dynastudio run --until STAGE` (plus `extra` options) in a child process; return its wall time, the peak
    resident memory (MiB) of that process or of the largest child process it ran, and the malloc it ran with.
    The child starts as `dynastudio run` restarts itself: with tcmalloc preloaded when the machine has it
    (core/malloc.py; here at the start, so that this wrapper, which a restart would drop, still sees the end)."""
    import tempfile

    from dynastudio.core import malloc

    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak_kb"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK_WRAPPER, str(peak_file), "run", str(project), "--until", stage, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=malloc.preload_env(),
        )
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"stage {stage} of {project} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        kb, used = peak_file.read_text().split("\n") if peak_file.is_file() else (None, None)
        peak = int(kb) / 1024 if kb is not None else None
    return {"seconds": seconds, "peak_rss_mib": peak, "peak_method": "VmHWM", "malloc": used}


def grid_scores(ws, model) -> dict[str, float]:
    specs = subnet_grid(WIDTHS, DEPTHS)
    return {k: v["score"] for k, v in evaluate_specs(ws, model, specs).items()}


def make_config(a, name: str) -> ProjectConfig:
    train = profile_config(
        "paper",
        batch_size=32,
        max_seq_length=a.seq,
        max_train_examples=a.train_examples,
        importance_examples=a.importance_examples,
        teacher_epochs=a.teacher_epochs,
        teacher_lr=a.teacher_lr,
        width_epochs=a.width_epochs,
        width_lr=a.lr,
        depth_epochs=a.depth_epochs,
        depth_lr=a.lr,
        depth_rule=a.depth_rule,
        seed=a.seed,
        checkpoint_every=10_000,
        width_l2=a.width_l2,
        depth_l2=a.depth_l2,
    )
    return ProjectConfig(
        model="builtin:minilm", data=DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)), train=train, name=name
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-examples", type=int, default=10_000)
    ap.add_argument("--importance-examples", type=int, default=2000)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=float, default=1.0)
    ap.add_argument("--teacher-lr", type=float, default=5e-5)
    ap.add_argument("--width-epochs", type=float, default=1.0, help="epochs of stage 1 (width)")
    ap.add_argument(
        "--depth-epochs",
        type=float,
        default=2.0,
        help="epochs of stage 2 (width x depth); CALIBRATION.md: one plain epoch misses the depth-0.5 targets",
    )
    ap.add_argument("--lr", type=float, default=5e-5, help="distillation learning rate")
    ap.add_argument("--width-l2", type=float, default=0.1)
    ap.add_argument("--depth-l2", type=float, default=1.0)
    ap.add_argument("--depth-rule", default="paper", choices=("paper", "keep-last"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-c", action="store_true", help="skip baseline C (halves the time)")
    ap.add_argument(
        "--only-c",
        action="store_true",
        help="run only baseline C's stages (needs the DynaBERT teacher in --work), e.g. in a second process "
        "beside the DynaBERT stages; a later plain invocation writes the report",
    )
    ap.add_argument("--work", default=str(ROOT / "bench" / ".cache" / "sst2"))
    ap.add_argument("--fresh", action="store_true", help="delete earlier work folders first")
    ap.add_argument("--name", default="sst2")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="re-render the .md/.png from the saved JSON")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((OUT / f"{a.name}.json").read_text()), OUT / a.name)
        return
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {GLUE}: this benchmark reads ../shared/data/glue/SST-2")

    work = Path(a.work)
    if a.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stages_file = work / "stages.json"  # per-stage time/memory survive a resumed benchmark
    stages: dict[str, dict] = json.loads(stages_file.read_text()) if stages_file.is_file() else {}
    runs_file = work / "invocations.json"  # every command that worked on this folder, oldest first
    invocations = json.loads(runs_file.read_text()) if runs_file.is_file() else []
    invocations.append(
        {"argv": "python bench/sst2.py " + " ".join(sys.argv[1:]), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    )
    runs_file.write_text(json.dumps(invocations, indent=2))

    def record(key: str, folder: Path, stage: str) -> None:
        measured = run_stage(folder, stage)
        # another process (--only-c) may have recorded its stages meanwhile: merge, don't overwrite
        stages.update(json.loads(stages_file.read_text()) if stages_file.is_file() else {})
        stages[key] = measured
        tmp = stages_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stages, indent=2))
        os.replace(tmp, stages_file)
        print(f"{key}: {stages[key]['seconds']:.0f}s, peak {mib(stages[key])} MiB", flush=True)

    # ---- DynaBERT -------------------------------------------------------------------------
    dyn_dir = work / "dynabert"
    if a.only_c:
        if not (dyn_dir / "project.json").exists() or not Project.open(dyn_dir).is_done("finetune"):
            raise SystemExit(
                f"--only-c needs the DynaBERT teacher: run the DynaBERT stages in {work} up to finetune first"
            )
        run_c(a, work, Project.open(dyn_dir), record)
        return
    if not (dyn_dir / "project.json").exists():
        new_project(dyn_dir, make_config(a, "dynabert"))
    for stage in ("finetune", "rewire", "width", "depth", "evaluate"):
        if not Project.open(dyn_dir).is_done(stage):
            record(f"dynabert/{stage}", dyn_dir, stage)
    dyn = Project.open(dyn_dir)
    ws = prepare_inputs(dyn)
    teacher_score = teacher_metrics(dyn)["score"]
    rows_meta = {r.label: r for r in dyn.grid().rows}
    results = {"dynabert": {label: r.value for label, r in rows_meta.items()}}

    # ---- A and B: slices of the teacher without training -----------------------------------
    results["A_teacher_sliced"] = grid_scores(ws, dyn.load_model("teacher"))
    results["B_rewired_sliced"] = grid_scores(ws, dyn.load_model("rewired"))

    # ---- how sure: the teacher-vs-cell gaps with a paired bootstrap over dev examples --------
    gaps = gap_intervals(ws, dyn.load_model("teacher"), dyn.load_model(final_model_name(dyn)), rows_meta)

    # ---- C: DynaBERT without rewiring: the same teacher stands in for the rewired model -----
    if not a.skip_c:
        c_dir = run_c(a, work, dyn, record)
        results["C_no_rewiring"] = {r.label: r.value for r in Project.open(c_dir).grid().rows}

    wall = time.perf_counter() - t_start
    # training stages only: rewire and evaluate record "steps" too (batches, sub-networks)
    steps = {
        k: v for k, v in dyn.state["stages"].items() if k in TRAINING_STAGES and "steps" in v and not v.get("skipped")
    }
    report = {
        "argv": " ".join(sys.argv[1:]),
        "invocations": invocations,
        "settings": {
            "model": "MiniLM-L6-H384 (builtin:minilm)",
            "data": "SST-2 (GLUE), train for training and importance, dev for reporting",
            "train_examples": len(ws.train),
            "importance_examples": len(ws.heldout),
            "dev_examples": len(ws.dev),
            "seq_len": a.seq,
            "batch_size": 32,
            "teacher_epochs": a.teacher_epochs,
            "teacher_lr": a.teacher_lr,
            "width_stage_epochs": a.width_epochs,
            "depth_stage_epochs": a.depth_epochs,
            "distill_lr": a.lr,
            "width_l1_l2": [1.0, a.width_l2],
            "depth_l1_l2": [1.0, a.depth_l2],
            "depth_rule": a.depth_rule,
            "seed": a.seed,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
        },
        "teacher": teacher_score,
        "target_gaps": gaps,
        "trajectory": {
            "dynabert": trajectory(dyn),
            **({"C_no_rewiring": trajectory(Project.open(work / "no_rewire"))} if not a.skip_c else {}),
        },
        "grid": results,
        "stage_steps": {k: v.get("steps") for k, v in steps.items()},
        "stages_measured": stages,
        "wall_seconds_this_invocation": wall,
        "wall_seconds_all_stages": sum(v["seconds"] for v in stages.values()),
        "rows": {
            k: {f: getattr(rows_meta[k], f) for f in ("width_mult", "depth_mult", "flops_rel", "total_params")}
            for k in rows_meta
        },
    }
    if not a.no_latency:
        report["latency"] = measure_latency(dyn)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(report, indent=2))
    render(report, OUT / a.name)


def run_c(a, work: Path, dyn: Project, record) -> Path:
    """Baseline C, DynaBERT without rewiring: the same teacher stands in for the rewired model, then the same
    width, depth and evaluate stages. Returns its project folder."""
    c_dir = work / "no_rewire"
    if not (c_dir / "project.json").exists():
        c = new_project(c_dir, make_config(a, "no_rewire"))
        teacher = dyn.load_model("teacher")
        c.save_model("teacher", teacher)
        c.save_model("rewired", teacher, {"note": "not rewired: baseline C"})
        # the scores file is the rewire stage's output: without it the engine would redo rewire and C would be
        # DynaBERT again (which is what happened before this copy was added)
        shutil.copy2(dyn.root / "importance.safetensors", c.root / "importance.safetensors")
        c.mark_done("finetune", dyn.stage_info("finetune"))
        c.mark_done("rewire", {"skipped": True, "note": "baseline C keeps the original order"})
    if "rewire" in pending_stages(Project.open(c_dir), "width"):  # the engine's own answer to "what would run"
        raise SystemExit(f"{c_dir}: baseline C's rewire stage would run (rewiring C): delete {c_dir} and run again")
    for stage in ("width", "depth", "evaluate"):
        if not Project.open(c_dir).is_done(stage):
            record(f"no_rewire/{stage}", c_dir, stage)
    return c_dir


TARGET_CELLS = {"w1_d1": 0.5, "w0.5_d1": 2.0, "w1_d0.5": 2.0, "w0.25_d0.5": 5.0}  # label -> allowed gap, points


def teacher_metrics(project: Project) -> dict:
    """The fine-tuned teacher's dev metrics, as the finetune stage recorded them."""
    info = project.stage_info("finetune")
    return info.get("metrics") or info.get("dev") or {}  # "dev": a work folder made before 0.2


def gap_intervals(ws, teacher, model, rows_meta: dict, n_boot: int = 5000, seed: int = 0) -> dict:
    """Teacher minus cell dev accuracy (points) for the target cells, with a 95% paired bootstrap interval:
    dev examples are resampled with replacement and both models scored on the same resample."""
    y = np.asarray(ws.dev.labels)
    args = (ws.cfg.train.depth_rule, ws.cfg.train.eval_batch_size, ws.pad_id, ws.device)
    t_ok = predict(teacher, ws.dev, SubnetSpec(), *args).argmax(-1) == y
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    out = {}
    for label in TARGET_CELLS:
        r = rows_meta[label]
        s_ok = predict(model, ws.dev, SubnetSpec(r.width_mult, r.depth_mult), *args).argmax(-1) == y
        diff = t_ok.astype(float) - s_ok.astype(float)
        boot = 100 * diff[idx].mean(axis=1)
        out[label] = {
            "gap": 100 * diff.mean(),
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "only_teacher_right": int((t_ok & ~s_ok).sum()),
            "only_cell_right": int((~t_ok & s_ok).sum()),
            "dev_examples": int(len(y)),
        }
    return out


def trajectory(project: Project) -> list[dict]:
    """The dev scores logged at the end of every epoch of every training stage, oldest first."""
    return [
        {"stage": r["stage"], "epoch": r["epoch"] + 1, "step": r["step"], "scores": r["results"]}
        for r in project.read_metrics()
        if r.get("kind") == "eval"
    ]


def measure_latency(project: Project) -> dict:
    """Per-cell ONNX fp32 latency (batch 1, seq 128, 1 thread); the same for every method of a cell shape."""
    from dynastudio.core import jobs

    jobs.run("latency", project, jobs.LatencyRequest(batch=1, seq=128, threads=1, formats=("fp32",)))
    grid = project.grid()
    return {"setup": grid.setup, "ms": {r.label: r.latency_ms("fp32") for r in grid.rows}}


def targets(report: dict) -> list[tuple[str, str, bool]]:
    g, t = report["grid"], report["teacher"]
    dyn = g["dynabert"]
    pts = lambda v: 100 * v  # noqa: E731
    out = []
    for label, limit in TARGET_CELLS.items():
        gap = pts(t - dyn[label])
        ci = report.get("target_gaps", {}).get(label)
        extra = f"; 95% interval of the gap {ci['ci95'][0]:+.2f} to {ci['ci95'][1]:+.2f}" if ci else ""
        out.append(
            (
                f"cell {label} within {limit} points of the teacher",
                f"{pts(dyn[label]):.2f} vs {pts(t):.2f} (gap {gap:+.2f}{extra})",
                gap <= limit,
            )
        )
    smaller = [k for k in dyn if k != "w1_d1"]
    for base in ("A_teacher_sliced", "B_rewired_sliced"):
        wins = [k for k in smaller if dyn[k] > g[base][k]]
        out.append(
            (
                f"DynaBERT above {base[0]} in every smaller cell",
                f"{len(wins)}/{len(smaller)} cells",
                len(wins) == len(smaller),
            )
        )
    if "C_no_rewiring" in g:
        diff = np.mean([pts(dyn[k] - g["C_no_rewiring"][k]) for k in smaller])
        out.append(("rewiring helps on average over the smaller cells (DynaBERT - C)", f"{diff:+.2f} points", diff > 0))
    return out


def render(report: dict, stem: Path) -> None:
    s, g = report["settings"], report["grid"]
    names = {
        "dynabert": "DynaBERT",
        "A_teacher_sliced": "A: teacher sliced",
        "B_rewired_sliced": "B: rewired teacher sliced",
        "C_no_rewiring": "C: DynaBERT without rewiring",
    }
    lat = (report.get("latency") or {}).get("ms", {})
    labels = [f"w{w:g}_d{d:g}" for d in DEPTHS for w in WIDTHS]
    md = [
        "# SST-2: the DynaBERT grid against baselines (MiniLM-L6-H384)",
        "",
        f"`{('python bench/sst2.py ' + report.get('argv', '')).strip()}`",
        "",
    ]
    if len(report.get("invocations", [])) > 1:
        md += [
            "Run in steps on one work folder (stages already done are skipped, their measurements kept): "
            + "; ".join(f"`{i['argv'].strip()}` at {i['started']}" for i in report["invocations"])
            + ".",
            "",
        ]
    md += ["## Settings", ""]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in s.items()]
    total = report.get("wall_seconds_all_stages")
    if total:
        md.append(f"- wall time of all training/evaluation stages: {total / 60:.1f} min")
    md += [
        "",
        f"Teacher (fine-tuned full model) dev accuracy: **{100 * report['teacher']:.2f}**",
        "",
        "## Dev accuracy per cell",
        "",
        "| width | depth | FLOPs | latency ms | " + " | ".join(names[k] for k in g) + " |",
        "|---|---|---|---|" + "---|" * len(g),
    ]
    for lab in labels:
        r = report["rows"][lab]
        ms = lat.get(lab)
        md.append(
            f"| {r['width_mult']:g} | {r['depth_mult']:g} | {r['flops_rel']:.3f} | {ms:.2f} |"
            if ms
            else f"| {r['width_mult']:g} | {r['depth_mult']:g} | {r['flops_rel']:.3f} | - |"
        )
        md[-1] += "".join(f" {100 * g[k][lab]:.2f} |" for k in g)
    md += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    md += [f"| {name} | {val} | {'yes' if ok else '**no**'} |" for name, val, ok in targets(report)]
    if report.get("target_gaps"):
        n = next(iter(report["target_gaps"].values()))["dev_examples"]
        md += [
            "",
            f"Gap = teacher minus cell, in points of dev accuracy; one dev example is {100 / n:.2f} points. "
            "The interval is a 95% paired bootstrap over the dev examples (5,000 resamples). Examples only the teacher / "
            "only the cell gets right: "
            + ", ".join(
                f"{k} {v['only_teacher_right']}/{v['only_cell_right']}" for k, v in report["target_gaps"].items()
            )
            + ".",
        ]
    if report.get("trajectory"):
        cells = list(TARGET_CELLS)
        md += [
            "",
            "## The target cells during training",
            "",
            "Dev accuracy logged at the end of each epoch of each stage (cells a stage does not train are blank).",
            "",
            "| model | after | " + " | ".join(cells) + " |",
            "|---|---|" + "---|" * len(cells),
        ]
        for key, evals in report["trajectory"].items():
            for e in evals:
                md.append(
                    f"| {names.get(key, key)} | {e['stage']} epoch {e['epoch']} | "
                    + " | ".join(f"{100 * e['scores'][c]:.2f}" if c in e["scores"] else "" for c in cells)
                    + " |"
                )
    if report.get("latency", {}).get("setup"):
        st = report["latency"]["setup"]
        md += [
            "",
            f"Latency: onnxruntime fp32, {st.get('device')}, {st.get('threads')} thread(s), batch {st.get('batch')}, seq {st.get('seq')}.",
        ]
    md += [
        "",
        "## Stage wall time and peak memory (max RSS of the stage's process)",
        "",
        "| stage | seconds | peak MiB |",
        "|---|---|---|",
    ]
    md += [f"| {k} | {v['seconds']:.0f} | {mib(v)} |" for k, v in report["stages_measured"].items()]
    if any(v.get("peak_method") != "VmHWM" for v in report["stages_measured"].values()):
        md += [
            "",
            "\\* measured as the max RSS that wait4 returns. Linux carries the benchmark process's own size at "
            "fork time into that figure, so a starred value is max(the stage's own peak, the benchmark process's size "
            "when it started the stage): exact when the stage outgrew the benchmark process (the training stages, "
            "all above 1 GB), an upper bound otherwise. Later runs read the stage's own VmHWM instead.",
        ]
    write_md(md, report, stem.with_suffix(".md"))
    plot(report, stem.with_suffix(".png"), names, labels, lat)


def write_md(md: list[str], report: dict, path: Path) -> None:
    """Write (and print) a report's markdown, with the analysis written into its JSON by hand, if any, at the end."""
    if report.get("analysis"):
        md = md + ["", "## Analysis", "", report["analysis"]]
    path.write_text("\n".join(md) + "\n")
    print("\n".join(md))


def mib(stage: dict) -> str:
    """A stage's peak memory for the table; starred when measured the old way (see the note under the table)."""
    if stage.get("peak_rss_mib") is None:
        return "-"
    return f"{stage['peak_rss_mib']:.0f}" + ("" if stage.get("peak_method") == "VmHWM" else " \\*")


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both lower latency and higher accuracy, by latency."""
    front, best = [], -1.0
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):  # at equal latency only the best counts
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot(report, path: Path, names, labels, lat) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_lat = all(lat.get(l) for l in labels)
    xs = [lat[l] if use_lat else report["rows"][l]["flops_rel"] for l in labels]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    style = {
        "dynabert": dict(marker="o", color="tab:blue", s=42),
        "A_teacher_sliced": dict(marker="x", color="tab:orange", s=30),
        "B_rewired_sliced": dict(marker="+", color="tab:red", s=40),
        "C_no_rewiring": dict(marker="s", facecolors="none", edgecolors="tab:green", s=34),
    }
    every = []
    for key, series in report["grid"].items():
        ys = [100 * series[l] for l in labels]
        every += [(x, y) for x, y in zip(xs, ys)]
        ax.scatter(xs, ys, label=names.get(key, key), zorder=3, **style.get(key, {}))
        if key == "dynabert":  # name each DynaBERT point; offsets by width keep neighbours apart
            offset = {1.0: (4, 4), 0.75: (4, -11), 0.5: (-40, 6), 0.25: (-40, -11)}
            for x, y, l in zip(xs, ys, labels):
                w = report["rows"][l]["width_mult"]
                ax.annotate(
                    l.replace("_", " "), (x, y), fontsize=7, xytext=offset.get(w, (3, 3)), textcoords="offset points"
                )
    front = pareto(every)
    ax.plot(
        [p[0] for p in front],
        [p[1] for p in front],
        "-",
        c="k",
        lw=1.2,
        alpha=0.6,
        zorder=2,
        label="Pareto front (all points)",
    )
    ax.axhline(100 * report["teacher"], ls="--", c="grey", lw=1, label="teacher")
    ax.set_xlabel(
        "latency, ms (ONNX fp32, batch 1, seq 128, 1 thread)" if use_lat else "FLOPs relative to the full model"
    )
    ax.set_ylabel("SST-2 dev accuracy, %")
    ax.set_title("MiniLM-L6-H384 on SST-2: every width x depth sub-network")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
