"""`dynastudio importance / report / latency / device-kit / export`: reading a trained project, and shipping it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import threads
from ..errors import ConfigError
from ..events import LogMessage
from ..requests import INT8_METHODS
from ..store import BUDGET_PRECISIONS, EXPORT_FORMAT_OF, ProjectStore, best_under_budget
from ..store.shapes import describe_shape
from .progress import print_logs, run_stoppable


def add_parsers(sub) -> None:
    i = sub.add_parser("importance", help="head and neuron importance scores")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_importance)

    rp = sub.add_parser("report", help="the results grid: one row per sub-network")
    rp.add_argument("dir")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--device", help="latency measured on this device (imported from a device kit)")
    rp.add_argument(
        "--budget-ms",
        type=float,
        metavar="MS",
        help="name the best sub-network whose latency fits this budget (as the Explore page's slider does)",
    )
    rp.add_argument(
        "--precision",
        choices=BUDGET_PRECISIONS,
        help="with --budget-ms: only this precision's figures (default any: each at its own dev metric)",
    )
    rp.set_defaults(func=cmd_report)

    from ..export.targets import OPENVINO_DEVICE

    lt = sub.add_parser("latency", help="onnxruntime latency and file size of every sub-network, into the grid")
    lt.add_argument("dir")
    lt.add_argument("--batch", type=int, default=1)
    lt.add_argument("--seq", type=int, help="sequence length in tokens (default: the project's max_seq_length)")
    lt.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    lt.add_argument("--formats", default="fp32", help="comma separated: fp32, int8, fp16 (default fp32)")
    lt.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=["onnxruntime", "openvino"],
        help=f"openvino: time the same ONNX files with OpenVINO (the intel-cpu and desktop-cpu presets' runtime); "
        f"kept as the device '{OPENVINO_DEVICE}'",
    )
    lt.add_argument("--runs", type=int, default=50, help="timed runs per sub-network and format")
    lt.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    lt.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        help="measure nothing: merge a device kit's latency-<device>.json under its device's name",
    )
    lt.add_argument("--device", help="with --import: the name to file it under (default: the one in the file)")
    lt.add_argument(
        "--shapes",
        action="store_true",
        help="time the per-layer shape table `dynastudio search` predicts latency from, instead of the grid",
    )
    lt.set_defaults(func=cmd_latency)

    dk = sub.add_parser("device-kit", help="a folder to time the sub-networks on a device (numpy + onnxruntime there)")
    dk.add_argument("dir")
    dk.add_argument("--out", required=True, help="the kit folder to create")
    dk.add_argument("--cells", help="WIDTHxDEPTH list, e.g. 1x1,0.5x0.5 (default: the project's whole grid)")
    dk.add_argument("--formats", default="fp32,int8", help="comma separated: fp32, int8, fp16 (default fp32,int8)")
    dk.add_argument("--overwrite", action="store_true")
    dk.add_argument(
        "--shapes",
        action="store_true",
        help="also the per-layer shape models that `dynastudio search --device NAME` predicts latency from",
    )
    dk.set_defaults(func=cmd_device_kit)

    from ..export.targets import FORMATS, PRESET_ALIASES, PRESETS

    ex = sub.add_parser("export", help="one sub-network as a standalone model for a device (verified)")
    ex.add_argument("dir")
    ex.add_argument("--width", type=float, help="width multiplier, e.g. 0.5")
    ex.add_argument("--depth", type=float, help="depth multiplier, e.g. 0.75")
    ex.add_argument(
        "--searched", metavar="LABEL", help="a point `dynastudio search` found (instead of --width/--depth)"
    )
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--format", choices=list(FORMATS), help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    what.add_argument(
        "--target",
        choices=list(PRESETS) + list(PRESET_ALIASES),
        help="; ".join(f"{k} -> {v}" for k, v in PRESETS.items()),
    )
    ex.add_argument("--out", required=True, help="the folder to create")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    ex.add_argument("--model", help="project model to export from (default: the most trained one)")
    ex.add_argument(
        "--min-agreement",
        type=float,
        default=99.0,
        metavar="PERCENT",
        help="INT8/fp16 exports pass only at this dev prediction agreement with PyTorch or more (default 99)",
    )
    ex.add_argument(
        "--trim-vocab",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only the tokens of the task's train and dev texts (and --keep-words): a much smaller "
        "file for small sub-networks (default: on for the phone presets, off otherwise)",
    )
    ex.add_argument(
        "--keep-words", metavar="FILE", help="with --trim-vocab: a text file of words (one per line) to keep too"
    )
    ex.add_argument(
        "--int8-method",
        choices=INT8_METHODS,
        default="per-token",
        help="how the INT8 formats quantize each MatMul's input: a range per token (default: closest to fp32); "
        "onnx-int8 and ort-int8 also take dynamic (one range per tensor: onnxruntime's own, about 10%% faster, "
        "further from fp32), openvino-int8 static (NNCF's ranges calibrated on train rows)",
    )
    ex.set_defaults(func=cmd_export)


def _threads(role: str) -> None:
    """Size this process's torch threads from the cores it may use (its share, beside other jobs); say so."""
    n, why = threads.configure_threads(role)
    if line := threads.sharing_line(n, why):
        print(f"[info] {line}", file=sys.stderr, flush=True)


def cmd_importance(a) -> int:
    from ..project import Project

    project = Project.open(Path(a.dir))
    imp = project.load_importance()
    if a.json:
        print(json.dumps({k: v.tolist() for k, v in imp.items()}))
        return 0
    head = imp["head"]
    L, H = head.shape
    print(f"head importance (|dL/d head_mask|, original order), {L} layers x {H} heads")
    for i in range(L):
        row = head[i] / head[i].max().clamp_min(1e-12)
        print(f"  layer {i}: " + " ".join(f"{v:4.2f}" for v in row.tolist()))
    neuron = imp["neuron"]
    print(f"FFN neuron importance, {neuron.shape[1]} neurons per layer (first-order Taylor)")
    for i in range(L):
        r = neuron[i]
        srt = r.sort(descending=True).values
        top = srt[: max(1, len(srt) // 4)].sum() / srt.sum().clamp_min(1e-12)
        print(
            f"  layer {i}: max {r.max():.3g}  median {r.median():.3g}  top quarter holds {100 * top:.0f}% of the total"
        )
    return 0


def cmd_report(a) -> int:
    project = ProjectStore.open(Path(a.dir))
    if a.budget_ms is not None:
        return _best_under_budget(project, a)
    if a.precision is not None:
        raise ConfigError("--precision picks the sub-network under a latency budget: give --budget-ms too")
    if a.json:
        print(json.dumps(project.load_results(device=a.device), indent=2))
        return 0
    grid = project.grid(device=a.device)
    metric = grid.metric or "metric"  # latency measured before any evaluation: no metric yet
    teacher = grid.teacher.get("score")
    print(f"task {grid.task}  model {grid.model}  depth rule {grid.depth_rule}  dev rows {grid.dev_examples}")
    if teacher is not None:
        print(f"teacher (fine-tuned, full): {metric} {100 * teacher:.2f}")
    trial = (project.stage_info("finetune") or {}).get("teacher_lr_trial")
    if isinstance(trial, dict):
        from .pipeline import describe_teacher_lr

        print(describe_teacher_lr(trial))
    extra = (project.stage_info("depth") or {}).get("augment")
    if isinstance(extra, dict):
        from .pipeline import describe_extra_rows

        print(f"the students also learned the teacher's outputs on {describe_extra_rows(extra)}")
    # a column per figure some row has: median and p90 latency per precision, then the files' sizes
    lat_cols = []
    for p in grid.precisions():
        lat_cols.append((f"{p}_ms", p, "median_ms"))
        if p in grid.precisions("p90_ms"):
            lat_cols.append((f"{p}_p90_ms", p, "p90_ms"))
    size_cols = [(f"onnx_{p}_mb", p, "size_mb") for p in grid.precisions("size_mb")]
    head = f"{'width':>5} {'depth':>5} {metric:>10} {'enc params':>11} {'params':>11} {'FLOPs':>6}"
    head += "".join(f" {c:>14}" for c, _, _ in lat_cols) + "".join(f" {c:>13}" for c, _, _ in size_cols)
    print(head)

    def num(v, fmt: str, width: int) -> str:
        return f" {format(v, fmt):>{width}}" if v is not None else f" {'-':>{width}}"

    for r in grid.rows:
        if r.kind == "searched":
            continue  # listed below, with their shapes
        # a row measured by `latency` before `evaluate` ran has no metric yet
        value = f"{100 * r.value:>10.2f}" if r.value is not None else f"{'-':>10}"
        line = f"{r.width_mult:>5g} {r.depth_mult:>5g} {value}"
        line += num(r.encoder_params, ",", 11) + num(r.total_params, ",", 11) + num(r.flops_rel, ".3f", 6)
        line += "".join(num(_figure(r, p, f), ".2f", 14) for _, p, f in lat_cols)
        line += "".join(num(_figure(r, p, f), ".1f", 13) for _, p, f in size_cols)
        print(line)
    searched = [r for r in grid.rows if r.kind == "searched"]
    if searched:
        print(f"searched by `dynastudio search` (dev {metric} reported only; chosen on held-out train rows):")
        for r in sorted(searched, key=lambda r: r.latency_ms("fp32") or 0.0):
            shape = describe_shape(r.searched or {})
            ms = r.latency_ms("fp32")
            value = f"{100 * r.value:.2f}" if r.value is not None else "-"
            when = f"{ms:.2f} ms" + ("*" if r.latency_predicted else "") if ms is not None else "-"
            print(f"  {r.label:<11} {metric} {value:>6}  {when:>9}  {shape}")
        if any(r.latency_predicted for r in searched):
            print("  (* predicted from the device's timed layer shapes)")
    if grid.setup is not None:
        s = grid.setup
        print(
            f"latency: {s.get('device')}, {s.get('threads')} thread(s), batch {s.get('batch')}, seq {s.get('seq')}"
            + (f", median/p90 of {s['runs']} runs, {s['runtime']}" if s.get("runs") and s.get("runtime") else "")
        )
    return 0


def _figure(row, precision: str, name: str) -> float | None:
    f = row.figures(precision)
    return getattr(f, name) if f is not None else None


def _best_under_budget(project: ProjectStore, a) -> int:
    """The best sub-network under the latency budget: the same question, and the same answer, as the Explore
    page's budget slider (store.best_under)."""
    grid = project.grid(device=a.device)
    best = best_under_budget(grid, a.budget_ms, a.precision or "any", project.root)
    row = grid.row(best.label)
    assert row is not None
    metric = grid.metric or "metric"
    if a.json:
        print(
            json.dumps(
                {
                    "label": best.label,
                    "width_mult": row.width_mult,
                    "depth_mult": row.depth_mult,
                    "precision": best.precision,
                    "latency_ms": best.x,
                    "metric": metric,
                    "value": best.y,
                    "budget_ms": a.budget_ms,
                    "device": grid.device,
                    "measured_on": (grid.setup or {}).get("device"),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"best under {a.budget_ms:g} ms on {grid.where}: {best.label}"
        + (f" in {best.precision}" if best.precision != "fp32" else "")
        + f" (width {row.width_mult:g}, depth {row.depth_mult:g}): {metric} {best.y:.4f} at {best.x:.2f} ms"
    )
    fmt = EXPORT_FORMAT_OF.get(best.precision)
    if fmt is not None:
        print(
            f"export it: dynastudio export {project.root} --width {row.width_mult:g} --depth {row.depth_mult:g} "
            f"--format {fmt} --out FOLDER"
        )
    return 0


def cmd_latency(a) -> int:
    from .. import jobs
    from ..events import LatencyMeasured
    from ..project import Project

    project = Project.open(Path(a.dir))
    if a.import_file:
        from .. import runs
        from ..store import import_device_latency

        runs.check_not_running(project.root, "import latency while a run holds the project")
        name = import_device_latency(project, Path(a.import_file), a.device)
        print(
            f"imported {a.import_file} as device '{name}': `dynastudio report {project.root} --device {name}` shows "
            f"its grid"
        )
        return 0
    from ..export.targets import OPENVINO_DEVICE

    _threads("latency")
    formats = tuple(f.strip().lower() for f in a.formats.split(",") if f.strip())
    seq = a.seq if a.seq is not None else project.config.train.max_seq_length

    def show(event) -> None:
        if isinstance(event, LatencyMeasured):
            vals = "  ".join(f"{f.format} {f.median_ms:.2f} ms" for f in event.formats)
            print(f"[{event.index}/{event.total}] {event.label:<12} {vals}", flush=True)
        elif isinstance(event, LogMessage) and event.level != "info":
            print_logs(event)

    print(
        f"measuring {formats} latency: batch {a.batch}, sequence {seq}, {a.threads} thread(s), "
        f"{a.runs} runs after {a.warmup} warm-up (in a separate process)",
        flush=True,
    )
    out = run_stoppable(
        "latency",
        project,
        jobs.LatencyRequest(
            batch=a.batch,
            seq=seq,
            threads=a.threads,
            formats=formats,
            runs=a.runs,
            warmup=a.warmup,
            runtime=a.runtime,
            shapes=a.shapes,
        ),
        show,
        "stopped; latency.json was not changed",
    )
    if out is None:
        return 130
    if a.shapes:
        print(
            f"timed {len(out['rows'])} layer shapes on {out['setup']['device']}: `dynastudio search {project.root} "
            "--budget-ms MS` predicts latency from them"
        )
        return 0
    print(
        f"measured {len(out['rows'])} sub-networks on {out['setup']['device']} with {out['setup']['runtime']}: "
        f"`dynastudio report {project.root}"
        + (f" --device '{OPENVINO_DEVICE}'" if a.runtime == "openvino" else "")
        + "` shows the grid"
    )
    return 0


def _cells(text: str | None):
    if not text:
        return None
    out = []
    for part in text.split(","):
        try:
            w, d = (float(x) for x in part.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--cells {text}: '{part}' is not WIDTHxDEPTH, e.g. --cells 1x1,0.5x0.5") from None
        out.append((w, d))
    return tuple(out)


def cmd_device_kit(a) -> int:
    _threads("device-kit")
    from .. import jobs
    from ..project import Project

    project = Project.open(Path(a.dir))
    formats = tuple(f.strip().lower() for f in a.formats.split(",") if f.strip())
    request = jobs.DeviceKitRequest(a.out, _cells(a.cells), formats, a.overwrite, a.shapes)
    out = run_stoppable("device-kit", project, request, print_logs, "stopped; nothing was written")
    if out is None:
        return 130
    print(f"wrote {out['path']} ({len(out['cells'])} sub-networks: {', '.join(out['cells'])})")
    print("on the device: python run_kit.py --threads 1 --device NAME   (needs numpy and onnxruntime only)")
    print(f"then here:     dynastudio latency {project.root} --import latency-NAME.json")
    return 0


def cmd_export(a) -> int:
    _threads("export")
    from .. import jobs
    from ..project import Project

    project = Project.open(Path(a.dir))
    if a.searched is not None and (a.width is not None or a.depth is not None):
        raise ConfigError("export: give either --searched LABEL or --width and --depth, not both")
    if a.searched is None and (a.width is None or a.depth is None):
        raise ConfigError("export: give --width and --depth (e.g. --width 0.5 --depth 0.75), or --searched LABEL")
    request = jobs.ExportRequest(
        a.width if a.width is not None else 1.0,
        a.depth if a.depth is not None else 1.0,
        a.target or a.format,
        a.out,
        overwrite=a.overwrite,
        model_name=a.model,
        min_agreement=a.min_agreement / 100,
        trim_vocab=a.trim_vocab,
        keep_words=a.keep_words,
        int8_method=a.int8_method,
        searched=a.searched,
    )
    rep = run_stoppable("export", project, request, print_logs, "stopped; nothing was written")
    if rep is None:
        return 130
    v = rep.verification
    via = f" (target {rep.target})" if rep.target else ""
    what = a.searched or f"w{rep.width_mult:g} d{rep.depth_mult:g}"
    print(f"exported {what} as {rep.format}{via} to {rep.path}")
    shape = (
        describe_shape(v["subnet"]["searched"])
        if "searched" in v["subnet"]
        else f"{v['subnet']['layers']} layers x {v['subnet']['heads']} heads x {v['subnet']['neurons']} neurons"
    )
    print(f"  {v['model_file']}: {rep.size_mb:.1f} MB, {v['subnet']['params']:,} parameters, {shape}")
    if rep.max_abs_diff is None:
        line = f"  not verified on this machine (no {rep.format} runtime here); spec checked: inputs, outputs, shapes"
    else:
        line = f"  max abs diff vs PyTorch {rep.max_abs_diff:.2e} at shapes {v['probe']['shapes']}"
    if rep.agreement is not None:
        line += (
            f"; dev agreement {100 * rep.agreement:.2f}% ({rep.dev_examples} examples, {v['dev']['agreement_kind']})"
        )
        dev = v.get("dev") or {}
        if dev.get("exported_score") is not None:
            line += f", {dev['metric']} {dev['exported_score']:.4f} vs {dev['pytorch_score']:.4f} in PyTorch"
    print(line)
    if voc := v.get("vocabulary"):
        h = voc["heldout"]
        print(
            f"  vocabulary trimmed to {voc['kept_tokens']:,} of {voc['original_tokens']:,} tokens: "
            f"{voc['size_before_mb']:.1f} MB -> {voc['size_after_mb']:.1f} MB; on new text (dev rows held out from the "
            f"vocabulary, {h['rows_with_unseen_tokens']} of {h['rows']} with unseen words) agreement {100 * h['agreement']:.2f}%"
        )
    if not rep.passed:
        print(f"error: export FAILED its check: {rep.failure}", file=sys.stderr)
        print("  the folder is kept for inspection; its verification.json and README.md say it failed", file=sys.stderr)
        return 1
    print("  verified: passed" if v.get("runtime_verified", True) else "  spec check: passed (not run on this machine)")
    print(f"  how to run it: {Path(rep.path) / 'README.md'}")
    return 0
