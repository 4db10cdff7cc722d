"""`dynastudio`: the pipeline headless, with progress bars; user mistakes exit 2 with one line on stderr."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from .config import BUILTIN_MINILM, DEPTH_RULES, PRECISIONS, PROFILES, STAGES, DataConfig, ProjectConfig, profile_config
from .errors import Cancelled, ConfigError, UserError
from .events import (
    EvalEnded, LogMessage, RunEnded, StageEnded, StageProgress, StageStarted, StepEnded, StopAcknowledged, StopToken,
    event_to_json,
)


# ---- progress -----------------------------------------------------------------------------------
class ProgressPrinter:
    """Event sink that draws one tqdm bar per stage and prints evaluations and checkpoints."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if isinstance(event, StageStarted):
            self._close()
            self.bar = tqdm(total=event.total_steps, initial=event.resumed_from_step, desc=event.stage, file=self.stream, dynamic_ncols=True)
        elif isinstance(event, StepEnded) and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            mean = sum(event.losses.values()) / max(1, len(event.losses))
            self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{event.lr:.1e}", refresh=False)
        elif isinstance(event, StageProgress) and self.bar is not None:
            self.bar.update(event.done - self.bar.n)
        elif isinstance(event, EvalEnded):
            vals = ", ".join(f"{k} {v:.4f}" for k, v in event.results.items())
            self._write(f"[{event.stage}] dev {event.metric_name}: {vals}")
        elif isinstance(event, StageEnded):
            self._close()
            self._write(f"[{event.stage}] {'skipped' if event.skipped else 'done'} in {event.seconds:.1f}s")
        elif isinstance(event, LogMessage):
            self._write(f"[{event.level}] {event.text}")
        elif isinstance(event, StopAcknowledged):
            self._write(f"stop requested ({event.source}): finishing this step, then saving a checkpoint")

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- commands -----------------------------------------------------------------------------------
def _data_config(a) -> DataConfig:
    if a.demo:
        return DataConfig(kind="demo")
    if a.task:
        if a.train or a.dev:
            raise ConfigError("give either --task or --train/--dev, not both")
        return DataConfig(kind="glue", task=a.task.lower(), data_dir=a.data_dir)
    missing = [f for f, v in (("--train", a.train), ("--dev", a.dev)) if not v]
    if missing:
        raise ConfigError(f"a local dataset needs {', '.join(missing)} (or use --task NAME for GLUE)")
    cols = tuple(c.strip() for c in (a.text_columns or "").split(",") if c.strip())
    if a.text_columns is not None and not 1 <= len(cols) <= 2:
        raise ConfigError("--text-columns takes one or two column names, e.g. sentence or question,passage")
    return DataConfig(
        kind="files", train=str(Path(a.train).resolve()), dev=str(Path(a.dev).resolve()),
        text_columns=cols, label_column=a.label_column,
    )


def cmd_new(a) -> int:
    from . import jobs

    if not a.demo and not a.model:
        raise ConfigError("give --demo, or --model PATH_OR_ID with a task")
    if a.demo and not a.overwrite and (Path(a.dir) / "project.json").is_file():
        from .project import Project

        if Project.open(Path(a.dir)).config.data.kind == "demo":  # the demo is the same every time: keep it
            print(f"{a.dir} already holds the demo project: nothing to create (--overwrite starts it afresh)")
            print(f"next: dynastudio run {a.dir}")
            return 0
    model = BUILTIN_MINILM if a.demo else a.model
    if model != BUILTIN_MINILM and Path(model).exists():
        model = str(Path(model).resolve())
    profile = a.profile or ("quick" if a.demo else "paper")
    train = profile_config(profile, depth_rule=a.depth_rule, seed=a.seed, precision=a.precision,
                           group_by_length=None if a.group_by_length is None else a.group_by_length == "on")
    config = ProjectConfig(
        model=model, model_is_finetuned=a.finetuned, data=_data_config(a), train=train, name=Path(a.dir).name,
    )
    project = jobs.run("create", Path(a.dir), jobs.CreateRequest(config, overwrite=a.overwrite), _print_logs)
    task = json.loads((project.root / "task.json").read_text())
    print(f"created {project.root}: model {model}, task {task['name']} ({task['train_rows']} train / {task['dev_rows']} dev rows, "
          f"metric {task['metric']}), profile {profile}")
    print(f"next: dynastudio run {project.root}")
    return 0


def _apply_run_options(project, a) -> None:
    t = project.config.train
    changes = {}
    if a.profile and a.profile != t.profile:
        new = profile_config(a.profile, seed=t.seed, depth_rule=t.depth_rule, max_train_examples=t.max_train_examples)
        changes = {f: getattr(new, f) for f in PROFILES[a.profile]} | {"profile": a.profile}
    if a.max_train_examples is not None and a.max_train_examples != t.max_train_examples:
        changes["max_train_examples"] = a.max_train_examples
    if a.precision is not None and a.precision != t.precision:
        # precision may change between runs: checkpoints keep fp32 weights, so a stage resumes in any precision
        project.save_config(project.config.with_train(precision=a.precision))
    if not changes:
        return
    started = [s for s in STAGES if project.is_done(s) or project.checkpoint_dir(s).exists()]
    if started:
        raise ConfigError(
            f"{project.root}: stage '{started[0]}' already ran with the project's settings; "
            f"drop --profile/--max-train-examples to resume, or create a new project"
        )
    project.save_config(project.config.with_train(**changes))


class JsonLines:
    """Event sink for `--events jsonl`: one JSON object per line on stdout (the format of run/events.jsonl)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __call__(self, event) -> None:
        self.stream.write(event_to_json(event) + "\n")
        self.stream.flush()

    def _close(self) -> None:
        pass


def _close_sink(sink) -> None:
    close = getattr(sink, "_close", None)
    if close is not None:
        close()


def _sink(kind: str):
    from .events import null_sink

    if kind == "jsonl":
        return JsonLines()
    if kind == "none":
        return null_sink
    return ProgressPrinter()


def cmd_run(a) -> int:
    from . import runs

    if a.follow:
        return _follow(Path(a.dir), _sink(a.events))
    from . import jobs, runtime
    from .events import null_sink
    from .project import Project

    project = Project.open(Path(a.dir))
    if a.nice and hasattr(os, "nice"):
        os.nice(a.nice)
    if not runtime.launched_distributed() or runtime.rank() == 0:
        # refused before the engine loads (the lock itself is taken once it has)
        runs.check_not_running(project.root, "start a run")
    if runtime.launched_distributed():  # started by torchrun: one process of several
        runtime.init_distributed(project.config.train.device)
    try:
        return _run(a, project, jobs, runtime, null_sink)
    finally:
        runtime.shutdown_distributed()


def _run(a, project, jobs, runtime, null_sink) -> int:
    main = runtime.is_main()
    _apply_run_options(project, a)  # every rank applies them in memory; rank 0 writes them
    # torchrun passes a Ctrl-C on to every process as SIGINT, and a cluster's scheduler stops a job with SIGTERM
    stop, previous = _stop_on_sigint(also_sigterm=True)
    printer = _sink(a.events) if main else null_sink
    if main and runtime.world() > 1:
        print(f"{runtime.world()} processes ({'NCCL' if runtime.backend() == 'nccl' else 'gloo'}); the batch of "
              f"{project.config.train.batch_size} rows is split across them", file=sys.stderr)
    try:
        out = jobs.run("run", project, jobs.RunRequest(until=a.until), printer, stop, launch_id=a.launch_id)
    except Cancelled:
        if main:
            _close_sink(printer)
            print(f"stopped; the project is saved: `dynastudio run {project.root}` resumes it", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not main:
        return 0
    _close_sink(printer)
    if not out.ran:
        print("nothing to do: every requested stage is done (dynastudio report shows the results)")
    else:
        print(f"ran: {', '.join(out.ran)}")
    return 0


def _follow(root: Path, printer, poll: float = 0.2) -> int:
    """Attach to the project's live run: show its events from the start until it ends (Ctrl-C detaches)."""
    import time

    from . import runs

    view = runs.run_view(root)
    if not view.live:
        if view.lock is not None and not view.lock.alive():
            raise ConfigError(f"{root}: no run is going (the last one, process {view.lock.pid}, ended without a word: "
                              f"killed?): `dynastudio run {root}` resumes it")
        raise ConfigError(f"{root}: no run is going: `dynastudio run {root}` starts one")
    tail = runs.EventTail(runs.events_path(root))
    started = None
    try:
        while True:
            for event in tail.poll():
                if isinstance(event, runs.RunStarted):
                    started = event
                    if isinstance(printer, ProgressPrinter):
                        print(f"following process {event.pid} on {event.host} (Ctrl-C detaches; the run goes on)",
                              file=sys.stderr, flush=True)
                printer(event)
                if isinstance(event, RunEnded):
                    _close_sink(printer)
                    return _ended(root, event)
            if tail.replaced or tail.check_replaced():
                print("the run ended and a new one started: follow it again", file=sys.stderr)
                return 0
            lock = runs.read_lock(root)
            pid_gone = started is not None and started.host == runs.socket.gethostname() and not runs.pid_alive(started.pid)
            if pid_gone or (lock is None and started is None):
                for event in tail.poll():  # its last words, if any
                    printer(event)
                    if isinstance(event, RunEnded):
                        _close_sink(printer)
                        return _ended(root, event)
                _close_sink(printer)
                print(f"error: the run ended without a word (process {started.pid if started else '?'} was killed or "
                      f"crashed): `dynastudio run {root}` resumes from its last checkpoint", file=sys.stderr)
                return 1
            time.sleep(poll)
    except KeyboardInterrupt:
        _close_sink(printer)
        print(f"\ndetached; the run goes on (`dynastudio stop {root}` stops it)", file=sys.stderr)
        return 0


def _ended(root: Path, event: RunEnded) -> int:
    if event.outcome == "done":
        print(f"the run finished: {', '.join(event.ran) or 'nothing left to run'}", file=sys.stderr)
        return 0
    if event.outcome == "stopped":
        print(f"the run stopped; the project is saved: `dynastudio run {root}` resumes it", file=sys.stderr)
        return 130
    print(f"error: the run failed: {event.message}", file=sys.stderr)
    return 1 if event.internal else 2


def cmd_stop(a) -> int:
    from . import runs

    root = Path(a.dir)
    if not (root / "project.json").is_file():
        raise ConfigError(f"{root}: not a DynaBERT Studio project (no project.json)")
    view = runs.run_view(root)
    lock = view.lock
    if lock is None:
        print(f"no run is going in {root}")
        return 0
    if not lock.alive():
        print(f"no run is going in {root}: process {lock.pid} left a stale lock (killed?); the next run clears it")
        return 0
    if lock.job == "latency":
        raise ConfigError(f"{root}: {lock.describe()} is running, not a training: it ends by itself in a few minutes")
    if a.now:
        if not lock.local:
            raise ConfigError(f"{root}: the run is on {lock.host}: stop it there (--now works on the same machine)")
        s = view.started
        pids = list(s.pids) + ([s.launcher_pid] if s.launcher_pid else []) if s is not None else [lock.pid]
        killed = runs.kill_hard(pids)
        print(f"ended process {', '.join(map(str, killed)) or lock.pid} now: progress since the last checkpoint is lost; "
              f"`dynastudio run {root}` resumes from it")
        return 0
    runs.request_stop(root, lock.run_id, "dynastudio stop")
    print(f"asked {lock.describe()} to stop after its current step (it saves a checkpoint first); "
          f"`dynastudio run {root} --follow` shows it stop")
    return 0


def cmd_status(a) -> int:
    from . import runs
    from .project import Project

    project = Project.open(Path(a.dir))
    cfg = project.config
    print(f"project {project.root}  model {cfg.model}  data {cfg.data.kind}:{cfg.data.task or cfg.data.train or 'demo'}  profile {cfg.train.profile}")
    view = runs.run_view(project.root)
    live_stage = None
    if view.lock is not None and view.lock.alive():
        if view.lock.job == "latency":
            print(f"busy: {view.lock.describe()}")
        else:
            live_stage = view.stage
            print(f"running: {view.lock.describe()}, at {view.progress_text()}"
                  + (" (stopping: saving a checkpoint)" if view.stopping else "")
                  + f"; `dynastudio run {project.root} --follow` follows it")
    elif view.lock is not None:
        print(f"the last run (process {view.lock.pid} on {view.lock.host}) ended without a word (killed or crashed): "
              f"its lock is stale and the next run clears it")
    elif view.ended is not None:
        print(f"last run: {view.ended.outcome}" + (f" ({view.ended.message})" if view.ended.message else ""))
    for stage in STAGES:
        if stage == live_stage and not project.is_done(stage):
            of = f" of {view.total}" if view.total else ""
            print(f"  {stage:<17} running" + (f" (step {view.step}{of})" if view.step is not None else ""))
            continue
        info = project.stage_info(stage)
        if (gone := project.missing_output(stage)) is not None:
            print(f"  {stage:<17} done, but {gone} is gone: `dynastudio run` makes it again (and what follows it)")
        elif info.get("done"):
            extra = " (skipped)" if info.get("skipped") else ""
            secs = f" {info['seconds']:.0f}s" if "seconds" in info else ""
            print(f"  {stage:<17} done{extra}{secs}")
            check = info.get("teacher_check")
            if isinstance(check, dict) and check.get("clearly_better") is False:
                print(f"  {'':<17} warning: {check.get('advice')}")
        else:
            ck = project.checkpoint_progress(stage)
            if ck is not None:
                step, total = ck
                print(f"  {stage:<17} paused (checkpoint at step {step}{f' of {total}' if total else ''})")
            else:
                print(f"  {stage:<17} pending")
    return 0


def cmd_importance(a) -> int:
    from .project import Project

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
        print(f"  layer {i}: max {r.max():.3g}  median {r.median():.3g}  top quarter holds {100 * top:.0f}% of the total")
    return 0


def cmd_report(a) -> int:
    from .project import Project

    project = Project.open(Path(a.dir))
    res = project.load_results(device=a.device)
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    metric = res["metric"] or "metric"  # latency measured before any evaluation: no metric yet
    teacher = res.get("teacher", {}).get("score")
    print(f"task {res['task']}  model {res['model']}  depth rule {res['depth_rule']}  dev rows {res['dev_examples']}")
    if teacher is not None:
        print(f"teacher (fine-tuned, full): {metric} {100 * teacher:.2f}")
    lat_cols = sorted({k for r in res["rows"] for k in r if k.startswith("latency_") and k.endswith("_ms")})
    size_cols = sorted({k for r in res["rows"] for k in r if k.startswith("size_") and k.endswith("_mb")})
    head = f"{'width':>5} {'depth':>5} {metric:>10} {'enc params':>11} {'params':>11} {'FLOPs':>6}"
    head += "".join(f" {c[8:]:>14}" for c in lat_cols) + "".join(f" {c[5:]:>13}" for c in size_cols)
    print(head)

    def num(r, key, fmt, width):
        v = r.get(key)
        return f" {format(v, fmt):>{width}}" if isinstance(v, (int, float)) else f" {'-':>{width}}"

    for r in res["rows"]:
        # a row measured by `latency` before `evaluate` ran has no metric yet
        value = f"{100 * r['value']:>10.2f}" if isinstance(r.get("value"), (int, float)) else f"{'-':>10}"
        line = f"{r['width_mult']:>5g} {r['depth_mult']:>5g} {value}"
        line += num(r, "encoder_params", ",", 11) + num(r, "total_params", ",", 11) + num(r, "flops_rel", ".3f", 6)
        line += "".join(num(r, c, ".2f", 14) for c in lat_cols) + "".join(num(r, c, ".1f", 13) for c in size_cols)
        print(line)
    if "latency_setup" in res:
        s = res["latency_setup"]
        print(f"latency: {s.get('device')}, {s.get('threads')} thread(s), batch {s.get('batch')}, seq {s.get('seq')}"
              + (f", median/p90 of {s['runs']} runs, {s['runtime']}" if s.get("runs") and s.get("runtime") else ""))
    return 0


def _stop_on_sigint(also_sigterm: bool = False) -> tuple[StopToken, dict]:
    """A StopToken that Ctrl-C (and, when asked, SIGTERM) sets; returns it and the handlers it replaced."""
    stop = StopToken()

    def on_signal(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        try:
            print("\nstopping after this step (Ctrl-C again to abort now)...", file=sys.stderr, flush=True)
        except OSError:  # SIGHUP: the terminal is gone; stop all the same
            pass

    # SIGTERM: docker stop, timeout, a scheduler; SIGHUP: the terminal or SSH session went away
    sigs = [signal.SIGINT] + ([signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []) if also_sigterm else [])
    return stop, {sig: signal.signal(sig, on_signal) for sig in sigs}


def _run_stoppable(name: str, project, request, sink, stopped: str):
    """Run a short job with Ctrl-C asking it to stop; None (after printing `stopped`) when it stopped."""
    from . import jobs

    stop, previous = _stop_on_sigint()
    try:
        return jobs.run(name, project, request, sink, stop)
    except Cancelled:
        print(stopped, file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGINT, previous[signal.SIGINT])


def _print_logs(event) -> None:
    if isinstance(event, LogMessage):
        print(f"[{event.level}] {event.text}", file=sys.stderr, flush=True)


def cmd_latency(a) -> int:
    from . import jobs
    from .events import LatencyMeasured
    from .project import Project

    project = Project.open(Path(a.dir))
    if a.import_file:
        from . import runs
        from .devicekit import import_device_latency

        runs.check_not_running(project.root, "import latency while a run holds the project")
        name = import_device_latency(project, Path(a.import_file), a.device)
        print(f"imported {a.import_file} as device '{name}': `dynastudio report {project.root} --device {name}` shows "
              f"its grid")
        return 0
    from .targets import OPENVINO_DEVICE

    formats = tuple(f.strip().lower() for f in a.formats.split(",") if f.strip())
    seq = a.seq if a.seq is not None else project.config.train.max_seq_length

    def show(event) -> None:
        if isinstance(event, LatencyMeasured):
            vals = "  ".join(f"{f.format} {f.median_ms:.2f} ms" for f in event.formats)
            print(f"[{event.index}/{event.total}] {event.label:<12} {vals}", flush=True)
        elif isinstance(event, LogMessage) and event.level != "info":
            _print_logs(event)

    print(f"measuring {formats} latency: batch {a.batch}, sequence {seq}, {a.threads} thread(s), "
          f"{a.runs} runs after {a.warmup} warm-up (in a separate process)", flush=True)
    out = _run_stoppable("latency", project, jobs.LatencyRequest(batch=a.batch, seq=seq, threads=a.threads, formats=formats,
                                                                 runs=a.runs, warmup=a.warmup, runtime=a.runtime), show,
                         "stopped; latency.json was not changed")
    if out is None:
        return 130
    print(f"measured {len(out['rows'])} sub-networks on {out['setup']['device']} with {out['setup']['runtime']}: "
          f"`dynastudio report {project.root}" + (f" --device '{OPENVINO_DEVICE}'" if a.runtime == "openvino" else "")
          + "` shows the grid")
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
    from . import jobs
    from .project import Project

    project = Project.open(Path(a.dir))
    formats = tuple(f.strip().lower() for f in a.formats.split(",") if f.strip())
    request = jobs.DeviceKitRequest(a.out, _cells(a.cells), formats, a.overwrite)
    out = _run_stoppable("device-kit", project, request, _print_logs, "stopped; nothing was written")
    if out is None:
        return 130
    print(f"wrote {out['path']} ({len(out['cells'])} sub-networks: {', '.join(out['cells'])})")
    print("on the device: python run_kit.py --threads 1 --device NAME   (needs numpy and onnxruntime only)")
    print(f"then here:     dynastudio latency {project.root} --import latency-NAME.json")
    return 0


def cmd_export(a) -> int:
    from . import jobs
    from .project import Project

    project = Project.open(Path(a.dir))
    request = jobs.ExportRequest(a.width, a.depth, a.target or a.format, a.out, overwrite=a.overwrite,
                                 model_name=a.model, min_agreement=a.min_agreement / 100,
                                 trim_vocab=a.trim_vocab, keep_words=a.keep_words)
    rep = _run_stoppable("export", project, request, _print_logs, "stopped; nothing was written")
    if rep is None:
        return 130
    v = rep.verification
    via = f" (target {rep.target})" if rep.target else ""
    print(f"exported w{rep.width_mult:g} d{rep.depth_mult:g} as {rep.format}{via} to {rep.path}")
    print(f"  {v['model_file']}: {rep.size_mb:.1f} MB, {v['subnet']['params']:,} parameters, "
          f"{v['subnet']['layers']} layers x {v['subnet']['heads']} heads x {v['subnet']['neurons']} neurons")
    if rep.max_abs_diff is None:
        line = f"  not verified on this machine (no {rep.format} runtime here); spec checked: inputs, outputs, shapes"
    else:
        line = f"  max abs diff vs PyTorch {rep.max_abs_diff:.2e} at shapes {v['probe']['shapes']}"
    if rep.agreement is not None:
        line += f"; dev agreement {100 * rep.agreement:.2f}% ({rep.dev_examples} examples, {v['dev']['agreement_kind']})"
        dev = v.get("dev") or {}
        if dev.get("exported_score") is not None:
            line += f", {dev['metric']} {dev['exported_score']:.4f} vs {dev['pytorch_score']:.4f} in PyTorch"
    print(line)
    if voc := v.get("vocabulary"):
        h = voc["heldout"]
        print(f"  vocabulary trimmed to {voc['kept_tokens']:,} of {voc['original_tokens']:,} tokens: "
              f"{voc['size_before_mb']:.1f} MB -> {voc['size_after_mb']:.1f} MB; on new text (dev rows held out from the "
              f"vocabulary, {h['rows_with_unseen_tokens']} of {h['rows']} with unseen words) agreement {100 * h['agreement']:.2f}%")
    if not rep.passed:
        print(f"error: export FAILED its check: {rep.failure}", file=sys.stderr)
        print("  the folder is kept for inspection; its verification.json and README.md say it failed", file=sys.stderr)
        return 1
    print("  verified: passed" if v.get("runtime_verified", True) else "  spec check: passed (not run on this machine)")
    print(f"  how to run it: {Path(rep.path) / 'README.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynastudio", description="DynaBERT Studio: one model, every size.")
    sub = p.add_subparsers(dest="cmd", required=True)

    n = sub.add_parser("new", help="create a project folder (validates the data right away)")
    n.add_argument("dir")
    n.add_argument("--demo", action="store_true", help="the built-in MiniLM on the built-in demo data")
    n.add_argument("--model", help=f"local folder, Hugging Face id, or {BUILTIN_MINILM}")
    n.add_argument("--finetuned", action="store_true", help="the model is already fine-tuned on this task: skip finetune")
    n.add_argument("--task", help="GLUE task: sst2, cola, mrpc, rte, qnli, qqp, mnli, stsb")
    n.add_argument("--data-dir", help="local GLUE folder (raw GLUE TSV layout) instead of downloading")
    n.add_argument("--train", help="local CSV/TSV/JSONL training file")
    n.add_argument("--dev", help="local CSV/TSV/JSONL dev file")
    n.add_argument("--text-columns", help="one or two column names, comma separated (default: guessed from the file, "
                   "and said)")
    n.add_argument("--label-column", help="default: guessed from the file (label, labels, target, class...), and said")
    n.add_argument("--profile", choices=sorted(PROFILES))
    n.add_argument("--depth-rule", choices=DEPTH_RULES)
    n.add_argument("--seed", type=int)
    n.add_argument("--precision", choices=PRECISIONS, help="auto (default): bf16 on a GPU that has it, fp16 on older "
                   "GPUs, fp32 on a CPU")
    n.add_argument("--group-by-length", choices=("on", "off"),
                   help="on (default): batches of rows of similar length, far less padding")
    n.add_argument("--overwrite", action="store_true", help="replace a project that exists in DIR")
    n.set_defaults(func=cmd_new)

    r = sub.add_parser("run", help="run (or resume) the pipeline")
    r.add_argument("dir")
    r.add_argument("--until", choices=STAGES)
    r.add_argument("--profile", choices=sorted(PROFILES))
    r.add_argument("--max-train-examples", type=int)
    r.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 on a GPU that has it, fp16 on older GPUs, fp32 on a CPU; saved in the project")
    r.add_argument("--events", choices=("bars", "jsonl", "none"), default="bars",
                   help="bars (default): progress bars on stderr; jsonl: every event as a JSON line on stdout "
                        "(the project also keeps them in run/events.jsonl); none")
    r.add_argument("--follow", action="store_true",
                   help="start nothing: attach to the run that is going in DIR and show it until it ends")
    r.add_argument("--launch-id", help=argparse.SUPPRESS)  # set by the studio, to recognise the run it launched
    r.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)  # the studio's runs yield the CPU to its window
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("stop", help="ask the run going in DIR to stop after its current step (it saves a checkpoint)")
    st.add_argument("dir")
    st.add_argument("--now", action="store_true", help="end it at once (loses the progress since its last checkpoint)")
    st.set_defaults(func=cmd_stop)

    s = sub.add_parser("status", help="which stages are done, and the run that is going")
    s.add_argument("dir")
    s.set_defaults(func=cmd_status)

    i = sub.add_parser("importance", help="head and neuron importance scores")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_importance)

    rp = sub.add_parser("report", help="the results grid: one row per sub-network")
    rp.add_argument("dir")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--device", help="latency measured on this device (imported from a device kit)")
    rp.set_defaults(func=cmd_report)

    from .targets import OPENVINO_DEVICE

    lt = sub.add_parser("latency", help="onnxruntime latency and file size of every sub-network, into the grid")
    lt.add_argument("dir")
    lt.add_argument("--batch", type=int, default=1)
    lt.add_argument("--seq", type=int, help="sequence length in tokens (default: the project's max_seq_length)")
    lt.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    lt.add_argument("--formats", default="fp32", help="comma separated: fp32, int8, fp16 (default fp32)")
    lt.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"],
                    help=f"openvino: time the same ONNX files with OpenVINO (the intel-cpu and desktop-cpu presets' runtime); "
                         f"kept as the device '{OPENVINO_DEVICE}'")
    lt.add_argument("--runs", type=int, default=50, help="timed runs per sub-network and format")
    lt.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    lt.add_argument("--import", dest="import_file", metavar="FILE",
                    help="measure nothing: merge a device kit's latency-<device>.json under its device's name")
    lt.add_argument("--device", help="with --import: the name to file it under (default: the one in the file)")
    lt.set_defaults(func=cmd_latency)

    dk = sub.add_parser("device-kit", help="a folder to time the sub-networks on a device (numpy + onnxruntime there)")
    dk.add_argument("dir")
    dk.add_argument("--out", required=True, help="the kit folder to create")
    dk.add_argument("--cells", help="WIDTHxDEPTH list, e.g. 1x1,0.5x0.5 (default: the project's whole grid)")
    dk.add_argument("--formats", default="fp32,int8", help="comma separated: fp32, int8, fp16 (default fp32,int8)")
    dk.add_argument("--overwrite", action="store_true")
    dk.set_defaults(func=cmd_device_kit)

    from .targets import FORMATS, PRESET_ALIASES, PRESETS

    ex = sub.add_parser("export", help="one sub-network as a standalone model for a device (verified)")
    ex.add_argument("dir")
    ex.add_argument("--width", type=float, required=True, help="width multiplier, e.g. 0.5")
    ex.add_argument("--depth", type=float, required=True, help="depth multiplier, e.g. 0.75")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--format", choices=list(FORMATS), help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    what.add_argument("--target", choices=list(PRESETS) + list(PRESET_ALIASES),
                      help="; ".join(f"{k} -> {v}" for k, v in PRESETS.items()))
    ex.add_argument("--out", required=True, help="the folder to create")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    ex.add_argument("--model", help="project model to export from (default: the most trained one)")
    ex.add_argument("--min-agreement", type=float, default=99.0, metavar="PERCENT",
                    help="INT8/fp16 exports pass only at this dev prediction agreement with PyTorch or more (default 99)")
    ex.add_argument("--trim-vocab", action=argparse.BooleanOptionalAction, default=None,
                    help="keep only the tokens of the task's train and dev texts (and --keep-words): a much smaller "
                         "file for small sub-networks (default: on for the phone presets, off otherwise)")
    ex.add_argument("--keep-words", metavar="FILE", help="with --trim-vocab: a text file of words (one per line) to keep too")
    ex.set_defaults(func=cmd_export)
    _plugin_commands(sub)
    return p


def _plugin_commands(sub) -> None:
    """Commands that front ends add (the studio adds `gui`) through the `dynastudio.commands` entry points:
    the engine never imports a front end."""
    for ep in sorted(entry_points(group="dynastudio.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # a front end whose own dependencies are missing: say so when it is called
            p = sub.add_parser(ep.name, help=f"(unavailable: {exc.name or exc} is not installed)")
            p.set_defaults(func=lambda a, n=ep.name, e=exc: _unavailable(n, e))
            continue
        register(sub)


def _unavailable(name: str, exc: ImportError) -> int:
    raise UserError(f"`dynastudio {name}` needs {exc.name or exc}, which is not installed: "
                    f"pip install 'dynabert-studio[studio]'")


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a failed check or a bug (with its traceback), 2 a user's mistake (one line), 130 stopped."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dynastudio report DIR | head -1`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again otherwise
        return 141  # as a process killed by SIGPIPE
    except Exception:
        traceback.print_exc()
        print("error: an internal error happened (the traceback above shows where): please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
