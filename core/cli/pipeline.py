"""`dynastudio new / run / stop / status`: creating a project, and running, following and stopping its training."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from .. import threads, tracking
from ..config import (
    BUILTIN_MINILM,
    DEPTH_RULES,
    PRECISIONS,
    PROFILES,
    REPORT_TO,
    STAGE_ORDERS,
    STAGES,
    DataConfig,
    ProjectConfig,
    profile_config,
    validate_train,
)
from ..errors import Cancelled, ConfigError
from ..events import RunEnded
from ..store import PROJECT_FILE, ProjectStore
from .progress import ProgressPrinter, close_sink, make_sink, print_logs, stop_on_sigint


def add_parsers(sub) -> None:
    n = sub.add_parser("new", help="create a project folder (validates the data right away)")
    n.add_argument("dir")
    n.add_argument("--demo", action="store_true", help="the built-in MiniLM on the built-in demo data")
    n.add_argument("--model", help=f"local folder, Hugging Face id, or {BUILTIN_MINILM}")
    n.add_argument(
        "--finetuned", action="store_true", help="the model is already fine-tuned on this task: skip finetune"
    )
    n.add_argument("--task", help="GLUE task: sst2, cola, mrpc, rte, qnli, qqp, mnli, stsb")
    n.add_argument("--data-dir", help="local GLUE folder (raw GLUE TSV layout) instead of downloading")
    n.add_argument("--train", help="local CSV/TSV/JSONL training file")
    n.add_argument("--dev", help="local CSV/TSV/JSONL dev file")
    n.add_argument(
        "--text-columns", help="one or two column names, comma separated (default: guessed from the file, and said)"
    )
    n.add_argument("--label-column", help="default: guessed from the file (label, labels, target, class...), and said")
    n.add_argument("--profile", choices=sorted(PROFILES))
    n.add_argument("--depth-rule", choices=DEPTH_RULES)
    n.add_argument("--seed", type=int)
    n.add_argument(
        "--teacher-lr",
        metavar="LR",
        help="the teacher's learning rate, such as 1e-4; auto: a short trial of four rates, then a whole teacher at "
        "each of the best two, the better on held-out train rows kept (the paper profile's default)",
    )
    n.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default): bf16 on a GPU or CPU that computes it natively, fp16 on older GPUs, fp32 on other CPUs",
    )
    n.add_argument(
        "--group-by-length",
        choices=("on", "off"),
        help="on (default): batches of rows of similar length, far less padding",
    )
    n.add_argument(
        "--report-to",
        metavar="TRACKERS",
        help=f"none (default), or {', '.join(REPORT_TO)}, comma separated: each run's losses, learning rate, dev "
        "metrics and final grid also go to these trackers (saved in the project)",
    )
    n.add_argument(
        "--augment",
        metavar="N",
        help="augmented copies of each training row for the distilling stages (replacements from the model's own "
        "masked-LM head or input embeddings): 0 for none, auto for the task's size (the paper profile's default; "
        "quick's is 0)",
    )
    n.add_argument(
        "--stage-order",
        choices=STAGE_ORDERS,
        help="paper (default): width, then width and depth; joint: every width and depth from the teacher at once, "
        "for the epochs of both stages",
    )
    n.add_argument(
        "--unlabeled",
        metavar="FILE",
        help="your unlabeled in-domain text (.txt one per line, or .csv/.tsv/.jsonl with the task's text columns): "
        "the distilling stages also learn the teacher's outputs on it",
    )
    n.add_argument("--overwrite", action="store_true", help="replace a project that exists in DIR")
    n.set_defaults(func=cmd_new)

    r = sub.add_parser("run", help="run (or resume) the pipeline")
    r.add_argument("dir")
    r.add_argument("--until", choices=STAGES)
    r.add_argument(
        "--one-process",
        action="store_true",
        help="run every stage in this process (for a debugger or a profiler); by default the long training stages "
        "(width, depth) start fresh in child processes of the run, which train faster (DYNASTUDIO_ONE_PROCESS=1 "
        "does the same)",
    )
    r.add_argument("--profile", choices=sorted(PROFILES))
    r.add_argument("--max-train-examples", type=int)
    r.add_argument(
        "--teacher-lr",
        metavar="LR",
        help="as for new; saved in the project, and the teacher and every stage after it run again when it changes",
    )
    r.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default): bf16 on a GPU or CPU that computes it natively, fp16 on older GPUs, fp32 on other CPUs; saved in the project",
    )
    r.add_argument(
        "--int8-epochs",
        type=float,
        metavar="N",
        help="quantization-aware distillation for the INT8 exports: N epochs after the depth stage (0 skips it, the "
        "default); saved in the project, and the stage runs again when N changes",
    )
    r.add_argument(
        "--augment",
        metavar="N",
        help="augmented copies of each training row for the distilling stages: 0 for none, auto for the task's "
        "size; saved in the project, and the width stage and those after it run again when it changes",
    )
    r.add_argument(
        "--stage-order",
        choices=STAGE_ORDERS,
        help="as for new; saved in the project, and the width stage and those after it run again when it changes",
    )
    r.add_argument(
        "--unlabeled",
        metavar="FILE",
        help="unlabeled in-domain text for the distilling stages (none drops it); saved in the project, and the "
        "width stage and those after it run again when it changes",
    )
    r.add_argument(
        "--report-to",
        metavar="TRACKERS",
        help=f"none, or {', '.join(REPORT_TO)}, comma separated: for this run only, in place of the project's "
        "train.report_to",
    )
    r.add_argument(
        "--events",
        choices=("bars", "jsonl", "none"),
        default="bars",
        help="bars (default): progress bars on stderr; jsonl: every event as a JSON line on stdout "
        "(the project also keeps them in run/events.jsonl); none",
    )
    r.add_argument(
        "--follow",
        action="store_true",
        help="start nothing: attach to the run that is going in DIR and show it until it ends",
    )
    r.add_argument("--launch-id", help=argparse.SUPPRESS)  # set by the studio, to recognise the run it launched
    r.add_argument(
        "--nice", type=int, default=0, help=argparse.SUPPRESS
    )  # the studio's runs yield the CPU to its window
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("stop", help="ask the run going in DIR to stop after its current step (it saves a checkpoint)")
    st.add_argument("dir")
    st.add_argument("--now", action="store_true", help="end it at once (loses the progress since its last checkpoint)")
    st.set_defaults(func=cmd_stop)

    s = sub.add_parser("status", help="which stages are done, and the run that is going")
    s.add_argument("dir")
    s.set_defaults(func=cmd_status)


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
        kind="files",
        train=str(Path(a.train).resolve()),
        dev=str(Path(a.dev).resolve()),
        text_columns=cols,
        label_column=a.label_column,
    )


def describe_extra_rows(facts: dict) -> str:
    """A distilling stage's record of its rows beyond the labelled ones (augmentation.distill_rows), in words."""
    parts = []
    if "rows" in facts and "copies" in facts:
        parts.append(
            f"{facts['rows']:,} augmented rows ({facts['copies']} copies of {facts.get('source_rows', 0):,} rows, "
            f"made in {facts.get('seconds', 0):.0f}s; replacements: {facts.get('source', '?')})"
        )
    if isinstance(facts.get("unlabeled"), dict):
        u = facts["unlabeled"]
        parts.append(f"{u.get('rows', 0):,} unlabeled rows from {u.get('file')}")
    return " and ".join(parts) or "no other rows"


def describe_teacher_lr(trial: dict) -> str:
    """The finetune stage's record of its learning-rate trial (stages._teacher_lr), in words."""
    if not trial.get("candidates"):
        return f"teacher_lr {trial.get('chosen', 0):g} ({trial.get('reason', 'no trial')})"
    short = ", ".join(f"{k} {v:.4f}" for k, v in trial["candidates"].items())
    text = f"teacher_lr {trial['chosen']:g} chosen by a trial: after {trial.get('steps_each')} steps each, {short}"
    tied = [r["steps"] for r in trial.get("rounds") or []]
    if tied:
        text += f" (every rate tied after {' and '.join(map(str, tied))} steps)"
    race = trial.get("race") or {}
    if race:
        whole = ", ".join(f"{k} {v['heldout_score']:.4f}" for k, v in race.items())
        text += f"; then whole teachers, {whole}"
    return text + f" (held-out train rows; {trial.get('seconds', 0):.0f}s in all)"


def teacher_lr_setting(text: str) -> float | None:
    """--teacher-lr's value as train.teacher_lr: a positive rate, or None for auto (the trial)."""
    if text.strip().lower() == "auto":
        return None
    try:
        lr = float(text)
    except ValueError:
        lr = -1.0
    if not 0 < lr < 1:
        raise ConfigError(f"--teacher-lr {text}: write a learning rate between 0 and 1 such as 1e-4, or auto")
    return lr


def augment_setting(text: str) -> int | None:
    """--augment's value as train.augment: a whole number of copies, or None for auto."""
    if text.strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 100:
        raise ConfigError(f"--augment {text}: write a whole number of copies from 0 to 100, or auto")
    return n


def cmd_new(a) -> int:
    from .. import jobs

    if not a.demo and not a.model:
        raise ConfigError("give --demo, or --model PATH_OR_ID with a task")
    if a.demo and not a.overwrite and (Path(a.dir) / PROJECT_FILE).is_file():
        if ProjectStore.open(Path(a.dir)).config.data.kind == "demo":  # the demo is the same every time: keep it
            print(f"{a.dir} already holds the demo project: nothing to create (--overwrite starts it afresh)")
            print(f"next: dynastudio run {a.dir}")
            return 0
    model = BUILTIN_MINILM if a.demo else a.model
    if model != BUILTIN_MINILM and Path(model).exists():
        model = str(Path(model).resolve())
    profile = a.profile or ("quick" if a.demo else "paper")
    train = profile_config(
        profile,
        depth_rule=a.depth_rule,
        seed=a.seed,
        precision=a.precision,
        group_by_length=None if a.group_by_length is None else a.group_by_length == "on",
        report_to=a.report_to,
        stage_order=a.stage_order,
    )
    if a.augment is not None:
        train = replace(train, augment=augment_setting(a.augment))
    if a.teacher_lr is not None:
        train = replace(train, teacher_lr=teacher_lr_setting(a.teacher_lr))
    data = _data_config(a)
    if a.unlabeled:
        data = replace(data, unlabeled=str(Path(a.unlabeled).resolve()))
    config = ProjectConfig(
        model=model,
        model_is_finetuned=a.finetuned,
        data=data,
        train=train,
        name=Path(a.dir).name,
    )
    project = jobs.run("create", Path(a.dir), jobs.CreateRequest(config, overwrite=a.overwrite), print_logs)
    task = project.task()
    print(
        f"created {project.root}: model {model}, task {task.name} ({task.train_rows} train / {task.dev_rows} dev rows, "
        f"metric {task.metric}), profile {profile}"
    )
    if train.augment is None:  # say what "auto" comes to for this task, and what it costs
        from ..augmentation import copies_for
        from ..prepare import prepare_inputs

        inputs = prepare_inputs(project)
        n = copies_for(inputs)
        print(
            f"augmentation: auto gives {n} copies of each of the {len(inputs.student_rows):,} student rows"
            + (
                f" (about {n + 1}x the time of the distilling stages; --augment 0 turns it off)"
                if n
                else " (the task is large enough without)"
            )
        )
    if train.teacher_lr is None and not a.finetuned:
        from ..config import TEACHER_LR_CANDIDATES, TEACHER_LR_RACE

        print(
            f"teacher_lr: auto, a short trial of {', '.join(f'{x:g}' for x in TEACHER_LR_CANDIDATES)}, then a whole "
            f"teacher at each of the best {TEACHER_LR_RACE} (about {TEACHER_LR_RACE}x the teacher's time; "
            "--teacher-lr 1e-4 sets one)"
        )
    for command in tracking.missing(train.report_to):  # the run refuses to start without them; say so now
        print(f"note: train.report_to is {train.report_to}: before `dynastudio run`, {command}", file=sys.stderr)
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
    if a.int8_epochs is not None and a.int8_epochs != t.int8_epochs:
        if a.int8_epochs < 0:
            raise ConfigError(f"--int8-epochs {a.int8_epochs:g}: must be 0 or more (0 skips the int8-aware stage)")
        project.save_config(project.config.with_train(int8_epochs=a.int8_epochs))
        if project.is_done("int8-aware") or project.checkpoint_dir("int8-aware").exists():
            project.reopen("int8-aware")  # it ran (or was skipped) with the old setting
    if a.teacher_lr is not None and teacher_lr_setting(a.teacher_lr) != t.teacher_lr:
        project.save_config(project.config.with_train(teacher_lr=teacher_lr_setting(a.teacher_lr)))
        if any(project.is_done(s) or project.checkpoint_dir(s).exists() for s in STAGES):
            project.reopen("finetune")  # the teacher, and everything learned from it
    distilled = ("width", "depth", "int8-aware")
    if a.augment is not None and augment_setting(a.augment) != t.augment:
        project.save_config(project.config.with_train(augment=augment_setting(a.augment)))
        if any(project.is_done(s) or project.checkpoint_dir(s).exists() for s in distilled):
            project.reopen("width")  # they learned from the rows of the old setting
    if a.stage_order is not None and a.stage_order != t.stage_order:
        project.save_config(project.config.with_train(stage_order=a.stage_order))
        if any(project.is_done(s) or project.checkpoint_dir(s).exists() for s in distilled):
            project.reopen("width")
    if a.unlabeled is not None:
        from ..augmentation import check_unlabeled

        path = None if a.unlabeled.strip().lower() in ("", "none") else str(Path(a.unlabeled).resolve())
        if path != project.config.data.unlabeled:
            data = replace(project.config.data, unlabeled=path)
            if path is not None:
                check_unlabeled(data)  # a bad file is refused before the project changes
            project.save_config(replace(project.config, data=data))
            if any(project.is_done(s) or project.checkpoint_dir(s).exists() for s in distilled):
                project.reopen("width")
    if not changes:
        return
    started = [s for s in STAGES if project.is_done(s) or project.checkpoint_dir(s).exists()]
    if started:
        raise ConfigError(
            f"{project.root}: stage '{started[0]}' already ran with the project's settings; "
            f"drop --profile/--max-train-examples to resume, or create a new project"
        )
    project.save_config(project.config.with_train(**changes))


def cmd_run(a) -> int:
    from .. import runs

    if a.follow:
        return _follow(Path(a.dir), make_sink(a.events))
    from .. import jobs, runtime
    from ..events import null_sink
    from ..project import Project

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
    if a.report_to is not None:  # for this run only: in memory, after the options above saved theirs
        project.config = replace(
            project.config, train=validate_train(replace(project.config.train, report_to=a.report_to))
        )
    tracking.require(project.config.train.report_to)  # a missing tracker package is refused before the lock is taken
    # torchrun passes a Ctrl-C on to every process as SIGINT, and a cluster's scheduler stops a job with SIGTERM
    stop, previous = stop_on_sigint(also_sigterm=True)
    printer = make_sink(a.events) if main else null_sink
    n_threads, why = threads.configure_threads("run")
    if main and (line := threads.sharing_line(n_threads, why)):
        print(line, file=sys.stderr)
    printer = threads.Rebalancer(printer, n_threads)  # gives cores to a job started beside the run, and takes them back
    if main and runtime.world() > 1:
        print(
            f"{runtime.world()} processes ({'NCCL' if runtime.backend() == 'nccl' else 'gloo'}); the batch of "
            f"{project.config.train.batch_size} rows is split across them",
            file=sys.stderr,
        )
    if main and a.events != "none":
        from .estimate import run_banner

        run_banner(project, a.until)  # the saved estimate's line, when it fits the settings: nothing is timed here
    try:
        from ..stageproc import one_process_by_default

        children = not (a.one_process or one_process_by_default()) and runtime.world() == 1
        request = jobs.RunRequest(until=a.until, stage_processes=children)
        out = jobs.run("run", project, request, printer, stop, launch_id=a.launch_id)
    except Cancelled:
        if main:
            close_sink(printer)
            print(f"stopped; the project is saved: `dynastudio run {project.root}` resumes it", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not main:
        return 0
    close_sink(printer)
    if not out.ran:
        print("nothing to do: every requested stage is done (dynastudio report shows the results)")
    else:
        print(f"ran: {', '.join(out.ran)}")
    return 0


def _follow(root: Path, printer, poll: float = 0.2) -> int:
    """Attach to the project's live run: show its events from the start until it ends (Ctrl-C detaches)."""
    import time

    from .. import runs

    view = runs.run_view(root)
    if not view.live:
        if view.lock is not None and not view.lock.alive():
            raise ConfigError(
                f"{root}: no run is going (the last one, process {view.lock.pid}, ended without a word: "
                f"killed?): `dynastudio run {root}` resumes it"
            )
        raise ConfigError(f"{root}: no run is going: `dynastudio run {root}` starts one")
    tail = runs.EventTail(runs.events_path(root))
    started = None
    try:
        while True:
            for event in tail.poll():
                if isinstance(event, runs.RunStarted):
                    started = event
                    if isinstance(printer, ProgressPrinter):
                        print(
                            f"following process {event.pid} on {event.host} (Ctrl-C detaches; the run goes on)",
                            file=sys.stderr,
                            flush=True,
                        )
                printer(event)
                if isinstance(event, RunEnded):
                    close_sink(printer)
                    return _ended(root, event)
            if tail.replaced or tail.check_replaced():
                print("the run ended and a new one started: follow it again", file=sys.stderr)
                return 0
            lock = runs.read_lock(root)
            pid_gone = (
                started is not None and started.host == runs.socket.gethostname() and not runs.pid_alive(started.pid)
            )
            if pid_gone or (lock is None and started is None):
                for event in tail.poll():  # its last words, if any
                    printer(event)
                    if isinstance(event, RunEnded):
                        close_sink(printer)
                        return _ended(root, event)
                close_sink(printer)
                print(
                    f"error: the run ended without a word (process {started.pid if started else '?'} was killed or "
                    f"crashed): `dynastudio run {root}` resumes from its last checkpoint",
                    file=sys.stderr,
                )
                return 1
            time.sleep(poll)
    except KeyboardInterrupt:
        close_sink(printer)
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
    from .. import runs

    root = Path(a.dir)
    if not (root / PROJECT_FILE).is_file():
        raise ConfigError(f"{root}: not a DynaBERT Studio project (no {PROJECT_FILE})")
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
        killed = runs.kill_hard(runs.local_pids(s) if s is not None else [lock.pid])  # never another node's pids
        print(
            f"ended process {', '.join(map(str, killed)) or lock.pid} now: progress since the last checkpoint is lost; "
            f"`dynastudio run {root}` resumes from it"
        )
        return 0
    runs.request_stop(root, lock.run_id, "dynastudio stop")
    print(
        f"asked {lock.describe()} to stop after its current step (it saves a checkpoint first); "
        f"`dynastudio run {root} --follow` shows it stop"
    )
    return 0


def cmd_status(a) -> int:
    from .. import runs

    project = ProjectStore.open(Path(a.dir))
    cfg = project.config
    print(
        f"project {project.root}  model {cfg.model}  data {cfg.data.kind}:{cfg.data.task or cfg.data.train or 'demo'}  profile {cfg.train.profile}"
    )
    view = runs.run_view(project.root)
    live_stage = None
    if view.lock is not None and view.lock.alive():
        if view.lock.job == "latency":
            print(f"busy: {view.lock.describe()}")
        else:
            live_stage = view.stage
            print(
                f"running: {view.lock.describe()}, at {view.progress_text()}"
                + (" (stopping: saving a checkpoint)" if view.stopping else "")
                + f"; `dynastudio run {project.root} --follow` follows it"
            )
    elif view.lock is not None:
        print(
            f"the last run (process {view.lock.pid} on {view.lock.host}) ended without a word (killed or crashed): "
            f"its lock is stale and the next run clears it"
        )
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
            extra_rows = info.get("augment")
            if isinstance(extra_rows, dict):
                print(f"  {'':<17} also learned the teacher's outputs on {describe_extra_rows(extra_rows)}")
            if isinstance(info.get("teacher_lr_trial"), dict):
                print(f"  {'':<17} {describe_teacher_lr(info['teacher_lr_trial'])}")
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
