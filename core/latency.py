"""On-device latency and file size of every grid sub-network, measured with onnxruntime in a child process."""

from __future__ import annotations

import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import errors
from .config import INT8_EMULATION, STAGE_MODEL
from .dynamic import SubnetSpec, spec_from_json, spec_to_json, subnet_grid, subnet_size
from .errors import Cancelled, ConfigError, ModelError, ProjectError
from .events import FormatLatency, LatencyMeasured, LogMessage, StageEnded, StageProgress, StageStarted, StopToken
from .project import Project
from .requests import LatencyRequest
from .store import EXPORT_FORMAT_OF, LATENCY_PRECISIONS, Figures, final_model_name
from .store.shapes import BASE_LABEL, SHAPES_KEY, shape_counts, shape_label

RUNTIMES = ("onnxruntime", "openvino")
from .export.targets import OPENVINO_DEVICE  # noqa: E402  (latency.json keeps OpenVINO's figures as a device of their own)

PROTOCOL_PREFIX = "@@latency "


@dataclass(frozen=True)
class LatencySettings:
    batch: int = 1
    seq: int = 128
    threads: int = 1
    formats: tuple[str, ...] = ("fp32",)
    runs: int = 50
    warmup: int = 10
    # added to the child's niceness. 0: the studio runs one job at a time, so a lowered priority never let our
    # own training go first; it only let other programs starve the measurement (10 minutes on a busy box)
    nice: int = 0
    runtime: str = "onnxruntime"

    def checked(self) -> LatencySettings:
        if self.batch < 1 or self.seq < 2 or self.threads < 1 or self.runs < 1 or self.warmup < 0:
            raise ConfigError("latency: batch, threads and runs must be at least 1, seq at least 2, warmup 0 or more")
        bad = [f for f in self.formats if f not in LATENCY_PRECISIONS]
        if bad or not self.formats:
            raise ConfigError(
                f"latency --formats {','.join(self.formats)}: choose from {', '.join(LATENCY_PRECISIONS)}"
            )
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"latency --runtime {self.runtime}: choose {' or '.join(RUNTIMES)}")
        if self.runtime == "openvino":
            from .export.targets import require_extra

            require_extra("openvino")
        return LatencySettings(
            self.batch,
            self.seq,
            self.threads,
            tuple(dict.fromkeys(self.formats)),
            self.runs,
            self.warmup,
            self.nice,
            self.runtime,
        )


# ---- measuring ----------------------------------------------------------------------------------
def cpu_name() -> str:
    """The CPU's model name (what the grid says it was measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def time_runs(sess, feed: dict, runs: int, warmup: int) -> np.ndarray:
    """Seconds of each of `runs` timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        sess.run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times[i] = time.perf_counter() - t
    return times


def latency_feed(input_names: list[str], vocab: int, batch: int, seq: int) -> dict:
    """Full-length random sentences (no padding): the worst case at this sequence length."""
    g = np.random.default_rng(0)
    low = 1000 if vocab > 2000 else min(5, vocab - 1)  # ordinary word pieces, past the special tokens
    ids = g.integers(low, vocab, size=(batch, seq), dtype=np.int64)
    f = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {k: f[k] for k in input_names}


@dataclass
class Cell:
    """One sub-network's exported files (format -> path) and the inputs to time them with."""

    files: dict
    feed: dict

    def sizes(self) -> dict:
        """The files' sizes in MB (a file and its external-data companions), under latency.json's keys."""
        out = {}
        for fmt, p in self.files.items():
            files = [q for q in p.parent.iterdir() if q.name == p.name or q.name.startswith(p.name + ".")]
            mb = sum(q.stat().st_size for q in files)
            out.update(Figures(size_mb=mb / 1e6).to_values(fmt))
        return out


def int8_method_for(runtime: str) -> str:
    """How the INT8 files a runtime is timed on are quantized: the export's per-token files need onnxruntime's own
    operators, which OpenVINO's ONNX reader lacks; it reads the dynamic ones."""
    return "dynamic" if runtime == "openvino" else "per-token"


def export_cell(slim, input_names: list[str], formats, folder: Path, s: LatencySettings, int8_slim=None) -> Cell:
    """Write `slim` in each of `formats` into `folder` with the export job's own writer (int8 from the fp32 file;
    from `int8_slim`'s, the int8-aware stage's weights, when given, as the INT8 export makes it)."""
    from .export.formats import write_format

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = write_format("onnx", slim, folder, input_names)
    files = {"fp32": fp32}
    method = int8_method_for(s.runtime)
    for f in formats:
        if f == "int8" and int8_slim is not None:
            (folder / "int8-aware").mkdir(exist_ok=True)
            source = write_format("onnx", int8_slim, folder / "int8-aware", input_names)
            files[f] = write_format(EXPORT_FORMAT_OF[f], int8_slim, folder, input_names, source, method)
        elif f != "fp32":
            files[f] = write_format(EXPORT_FORMAT_OF[f], slim, folder, input_names, fp32_onnx=fp32, int8_method=method)
    return Cell({f: files[f] for f in formats}, latency_feed(input_names, slim.config.vocab_size, s.batch, s.seq))


def n_rounds(runs: int) -> int:
    return max(1, min(5, runs // 10))


class _OpenVinoSession:
    """OpenVINO compiled for latency on `threads` CPU threads, with onnxruntime's `run(None, feed)` call."""

    def __init__(self, path: Path, threads: int):
        from .export.runtimes import import_openvino

        ov = import_openvino()
        compiled = ov.Core().compile_model(
            str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        )
        self.request = compiled.create_infer_request()

    def run(self, _outputs, feed):
        return self.request.infer(feed)


def open_session(path: Path, s: LatencySettings):
    if s.runtime == "openvino":
        return _OpenVinoSession(path, s.threads)
    from .export.runners import ort_session

    return ort_session(path, threads=s.threads)


def time_cells(cells: list[Cell], s: LatencySettings, on_round=None) -> list[dict]:
    """Median and p90 latency of every cell and format, timed in interleaved rounds.

    Each round times every cell for a share of the runs, with a fresh session and a short warm-up:
    a load that comes and goes (a training beside us) then weighs on every cell alike instead of
    on whichever cells happened to run at the busy moment, so the ratios between cells hold.
    """
    rounds = n_rounds(s.runs)
    share = [s.runs // rounds + (1 if r < s.runs % rounds else 0) for r in range(rounds)]
    warm = max(1, -(-s.warmup // rounds)) if s.warmup else 0
    times: list[dict] = [{f: [] for f in c.files} for c in cells]
    for r in range(rounds):
        for c, t in zip(cells, times):
            for fmt, path in c.files.items():
                sess = open_session(path, s)
                t[fmt].append(time_runs(sess, c.feed, share[r], warm if r else max(warm, s.warmup)))
                del sess
        if on_round is not None:
            on_round(r + 1, rounds)
    out = []
    for c, t in zip(cells, times):
        values = {}
        for fmt in c.files:
            all_t = np.concatenate(t[fmt]) * 1e3
            values.update(Figures(float(np.median(all_t)), float(np.percentile(all_t, 90))).to_values(fmt))
        out.append({**values, **c.sizes()})
    return out


def model_for_latency(project: Project):
    """(model, name): the most trained model; before any training the base model (latency depends only on shapes)."""
    from .models import load_model_config, resolve_model

    try:
        name = final_model_name(project)
    except ProjectError:
        name = None
    if name is not None:
        return project.load_model(name), name
    from transformers import AutoModelForSequenceClassification

    n_labels = 2
    if project.task_path.is_file():
        task = project.task()
        n_labels = 1 if task.is_regression else max(1, len(task.label_names or (0, 1)))
    load_model_config(project.config.model)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(project.config.model), num_labels=n_labels
        )
    except Exception as exc:
        raise ModelError(
            f"model '{project.config.model}': weights could not be loaded ({str(exc).splitlines()[0][:140]})"
        ) from None
    return model.float().eval(), "base (untrained: latency depends only on the shapes)"


def latency_setup(s: LatencySettings, model_name: str) -> dict:
    import onnxruntime

    if s.runtime == "openvino":
        from .export.runtimes import import_openvino

        ov = import_openvino()
        runtime = f"OpenVINO {ov.get_version().split('-')[0]} CPU plugin"
        session = "OpenVINO LATENCY hint, one stream, default inference precision (bf16 where the CPU has it)"
    else:
        runtime = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
        session = "sequential execution, inter-op threads 1, graph optimizations on except SkipLayerNormFusion"

    return {
        "device": cpu_name(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_count": os.cpu_count(),
        "threads": s.threads,
        "batch": s.batch,
        "seq": s.seq,
        "runs": s.runs,
        "warmup": s.warmup,
        "formats": list(s.formats),
        "int8_method": int8_method_for(s.runtime) if "int8" in s.formats else None,
        "statistics": f"median and p90 of the timed runs (in {n_rounds(s.runs)} interleaved rounds), milliseconds per batch",
        "runtime": runtime,
        "onnxruntime": onnxruntime.__version__,
        "session": session,
        "process": f"separate process at nice +{s.nice}",
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "model": model_name,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def precision_scores(project: Project, tokenizer, cells: list[Cell], say, int8_method: str = "per-token") -> list[dict]:
    """Each cell's dev metric in its reduced-precision files (INT8 quantized by `int8_method`, fp16), run with
    onnxruntime on the whole dev set: {"metric_int8": score, ...} per cell. The fp32 point's metric is the evaluation's (PyTorch
    fp32, which the fp32 ONNX file matches within 1e-4). Empty dicts when the dev set cannot be read."""
    from .data.batching import iterate_batches
    from .export.runners import feed, ort_session
    from .metrics import compute_metric
    from .prepare import prepare_inputs

    if not any(f != "fp32" for c in cells for f in c.files):
        return [{} for _ in cells]
    try:
        inputs = prepare_inputs(project)
    except errors.UserError as exc:
        say(f"no dev metric per precision: the dev set could not be read ({str(exc)[:120]})")
        return [{} for _ in cells]
    dev, metric = inputs.dev, inputs.task.metric
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for i, c in enumerate(cells):
        scores = {}
        for fmt, path in c.files.items():
            if fmt == "fp32":
                continue
            sess = ort_session(path)  # this process's share of the cores (a score, not a timing)
            names = list(c.feed)
            # a per-token INT8 file quantizes each token on its own, so a row's result does not depend on its batch
            # (nor does fp16's); a dynamic one's does: its rows run one at a time, as a device runs them
            rows = 1 if fmt == "int8" and int8_method == "dynamic" else 64
            batches = iterate_batches(dev, rows, shuffle=False, pad_id=pad)
            logits = [sess.run(None, feed(b, names))[0] for b in batches]
            score = compute_metric(metric, np.concatenate(logits), np.asarray(dev.labels))["score"]
            scores.update(Figures(metric=score).to_values(fmt))
            del sess
        out.append(scores)
        say(f"dev {metric} per precision: {i + 1}/{len(cells)} sub-networks")
    return out


# ---- the child process --------------------------------------------------------------------------
def _child_main() -> int:
    """`python -m dynastudio.core.latency --child`: read one request (JSON) on stdin, write one line per result."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # libraries' prints go to stderr: stdout carries the protocol only

    def send(**msg) -> None:
        proto.write(PROTOCOL_PREFIX + json.dumps(msg) + "\n")
        proto.flush()

    req = json.loads(sys.stdin.read())
    s = LatencySettings(**{**req["settings"], "formats": tuple(req["settings"]["formats"])})
    try:
        if s.nice and hasattr(os, "nice"):
            os.nice(s.nice)
        import torch

        torch.set_num_threads(s.threads)
        from .export.logits import input_names_for
        from .extract import extract_from_model
        from .models import quiet_transformers
        from .prepare import project_tokenizer

        quiet_transformers()
        project = Project.open(Path(req["root"]))
        model, name = model_for_latency(project)
        aware = "int8" in s.formats and project.has_int8_aware_model() and int8_method_for(s.runtime) == INT8_EMULATION
        int8_model = project.load_model(STAGE_MODEL["int8-aware"]) if aware else None
        c = model.config
        longest = c.max_position_embeddings - ((c.pad_token_id or 0) + 1 if c.model_type != "bert" else 0)
        if s.seq > longest:
            raise ConfigError(
                f"latency --seq {s.seq}: the model takes at most {longest} tokens: pick a shorter sequence"
            )
        tokenizer = project_tokenizer(project)
        send(setup={**latency_setup(s, name), "int8_weights": STAGE_MODEL["int8-aware"] if aware else name})
        rule = project.config.train.depth_rule
        full_flops = subnet_size(model.config, SubnetSpec(), rule)["flops"]
        cells, sizes = [], []
        with tempfile.TemporaryDirectory(prefix="dynastudio-latency-") as scratch:
            specs = [spec_from_json(v) for v in req["specs"]]
            for i, spec in enumerate(specs):
                slim = extract_from_model(model, spec, rule)
                int8_slim = extract_from_model(int8_model, spec, rule) if int8_model is not None else None
                names = input_names_for(tokenizer, slim)
                cells.append(export_cell(slim, names, s.formats, Path(scratch) / spec.label, s, int8_slim))
                size = subnet_size(model.config, spec, rule)
                sizes.append({**size, "flops_rel": size["flops"] / full_flops})
                send(progress=f"exported {spec.label} ({i + 1}/{len(specs)})")
            del model, int8_model
            measured = time_cells(cells, s, lambda r, n: send(progress=f"timing round {r}/{n} done"))
            scores = (
                precision_scores(project, tokenizer, cells, lambda m: send(progress=m), int8_method_for(s.runtime))
                if req.get("score", True)
                else [{} for _ in cells]
            )
        for spec, size, values, score in zip(specs, sizes, measured, scores):
            values.update(score)
            send(row={"spec": spec_to_json(spec), "sizes": size, "values": values})
    except errors.UserError as exc:
        send(error={"type": type(exc).__name__, "message": str(exc)})
        return 2
    send(done=True)
    return 0


def _run_child(request: dict, threads: int, on_message, stop: StopToken) -> None:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
            encoding="utf-8",
        )
        lines: queue.Queue = queue.Queue()

        assert proc.stdin is not None and proc.stdout is not None  # both are PIPEs

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROTOCOL_PREFIX):
                    lines.put(json.loads(line[len(PROTOCOL_PREFIX) :]))
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.stdin.write(json.dumps(request))
            proc.stdin.close()
            while True:
                if stop.is_set():
                    raise Cancelled("stopped by request")
                try:
                    msg = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if msg is None:
                    break
                if "error" in msg:
                    cls = getattr(errors, msg["error"]["type"], errors.UserError)
                    raise (cls if isinstance(cls, type) and issubclass(cls, errors.UserError) else errors.UserError)(
                        msg["error"]["message"]
                    )
                on_message(msg)
            if proc.wait() != 0:
                err.seek(0)
                tail = "\n".join(err.read().strip().splitlines()[-8:])
                raise RuntimeError(f"the latency measurement process failed (exit {proc.returncode}):\n{tail}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reader.join(timeout=5)
            proc.stdout.close()  # Popen leaves its pipes open: an unclosed file (ResourceWarning) per measurement


# ---- the job ------------------------------------------------------------------------------------
def _where(spec) -> dict:
    """What a latency.json row says of its sub-network: a cell's multipliers, a searched shape's counts."""
    if isinstance(spec, SubnetSpec):
        return {"width_mult": spec.width_mult, "depth_mult": spec.depth_mult}
    return {"searched": spec.to_json()}


def merged_shapes(before: dict | None, setup: dict, rows: list[dict]) -> list[dict]:
    """The shape rows to keep: these, with the figures of other precisions timed before at the same batch, sequence,
    threads and runtime (so an int8 table joins the fp32 one); earlier figures of another setup are dropped."""
    same = ("batch", "seq", "threads", "runtime", "device")
    if not before or any(before.get("setup", {}).get(k) != setup.get(k) for k in same):
        return rows
    old = {r["label"]: r for r in before.get("rows", [])}
    return [{**r, "values": {**old.get(r["label"], {}).get("values", {}), **r["values"]}} for r in rows]


def shape_specs(project: Project) -> tuple[list[str], list, int]:
    """(labels, specs, L): the models the shape table is timed on: no layer (the base), then for each pair of
    head and neuron counts the trained widths keep, every layer at that shape."""
    from .dynamic import ArchSpec
    from .models import load_model_config

    c = load_model_config(project.config.model)
    L = c.num_hidden_layers
    heads, neurons = shape_counts(c.num_attention_heads, c.intermediate_size, project.config.train.width_mults)
    labels, specs = [BASE_LABEL], [ArchSpec((), (), ())]
    for h in heads:
        for n in neurons:
            labels.append(shape_label(h, n))
            specs.append(ArchSpec(tuple(range(L)), (h,) * L, (n,) * L))
    return labels, specs, L


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of every core since boot, from /proc/stat (Linux); None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_warning(window: float = 0.5) -> str | None:
    """A one-line warning when other work keeps more than half the cores busy, else None.

    Measured over `window` seconds while this process waits (so what it sees is other work), not from the load
    average: that one trails by a minute and warned right after the studio's own training had ended."""
    cores = os.cpu_count() or 1
    before = _cpu_jiffies()
    if before is None:
        if not hasattr(os, "getloadavg"):
            return None
        busy, what = os.getloadavg()[0], "load"
    else:
        time.sleep(window)
        after = _cpu_jiffies()
        span = after[1] - before[1] if after else 0
        if not after or span <= 0:
            return None
        busy, what = cores * (after[0] - before[0]) / span, "busy cores"
    if busy <= 0.5 * cores:
        return None
    return (
        f"the machine is busy ({what} {busy:.1f} on {cores} cores): latency figures taken now are slower and "
        "noisier than on a quiet machine; close other work and measure again for figures to compare"
    )


def latency_job(project: Project, request: LatencyRequest, events, stop: StopToken) -> dict:
    """Measure every grid sub-network's onnxruntime latency (median, p90) and ONNX file size on this machine.

    Each sub-network is extracted and written per format (fp32, int8, fp16) by the export job's writer;
    then all of them are timed in interleaved rounds (`warmup` untimed runs, then `runs` timed runs in
    all, at batch x seq tokens with `threads` intra-op threads), so a load that comes and goes skews
    every cell alike. All of it happens in a child process with its thread count pinned; a warning
    event says when the machine is busy, since figures taken then mean little. The numbers go to latency.json (this job is
    its only writer); `Project.load_results()` joins them with the evaluated grid. Emits StageStarted,
    StageProgress, LatencyMeasured and StageEnded; a set stop token ends the child and raises Cancelled.
    Returns {"rows": [...], "setup": {...}}.
    """
    seq = request.seq if request.seq is not None else project.config.train.max_seq_length
    s = LatencySettings(
        request.batch,
        seq,
        request.threads,
        tuple(request.formats),
        request.runs,
        request.warmup,
        runtime=request.runtime,
    ).checked()
    t = project.config.train
    specs: list = (
        [SubnetSpec(w, d) for w, d in request.specs]
        if request.specs is not None
        else subnet_grid(t.width_mults, t.depth_mults)
    )
    labels, n_layers = [sp.label for sp in specs], 0
    if request.shapes:
        labels, specs, n_layers = shape_specs(project)
    stop.check()
    t0 = time.perf_counter()
    # one unit per sub-network exported, then one per timing round
    # then one per sub-network scored on the dev set in its INT8/fp16 files
    scored = any(f != "fp32" for f in s.formats) and not request.shapes
    total = len(specs) + n_rounds(s.runs) + (len(specs) if scored else 0)
    events(StageStarted("latency", total))
    if busy := busy_warning():
        events(LogMessage(busy, "warning"))
    measured: list[dict] = []
    state: dict = {"done": 0}

    def on_message(msg: dict) -> None:
        if "setup" in msg:
            state["setup"] = msg["setup"]
        elif "progress" in msg:
            state["done"] += 1
            events(StageProgress("latency", state["done"], total))
            events(LogMessage(f"latency: {msg['progress']}"))
        elif "row" in msg:
            row = msg["row"]
            spec, label = specs[len(measured)], labels[len(measured)]  # the child answers in request order
            if spec_from_json(row["spec"]) != spec:
                raise errors.InternalError(f"latency: got {row['spec']} for {spec.label}: please report it")
            measured.append({"label": label, **_where(spec), "values": row["values"], "sizes": row["sizes"]})
            fl = []
            for f in s.formats:
                x = Figures.from_values(row["values"], f)
                if x.median_ms is None or x.p90_ms is None or x.size_mb is None:
                    raise errors.InternalError(
                        f"latency: {spec.label} came back without its {f} figures: please report it"
                    )
                fl.append(FormatLatency(f, x.median_ms, x.p90_ms, x.size_mb))
            w, d = (spec.width_mult, spec.depth_mult) if isinstance(spec, SubnetSpec) else (0.0, 0.0)
            events(LatencyMeasured(label, w, d, tuple(fl), len(measured), len(specs)))

    child_request = {
        "root": str(project.root.resolve()),
        "specs": [spec_to_json(sp) for sp in specs],
        "settings": {**asdict(s), "formats": list(s.formats)},
        "score": not request.shapes,
    }
    _run_child(child_request, s.threads, on_message, stop)
    if len(measured) != len(specs) or "setup" not in state:
        raise errors.InternalError("the latency measurement process ended early without an error: please report it")
    setup = {**state["setup"], "seconds": round(time.perf_counter() - t0, 1)}
    latency = project.load_latency() or {}
    if request.shapes:
        where = latency.get("devices", {}).get(OPENVINO_DEVICE, {}) if s.runtime == "openvino" else latency
        shapes = {"setup": setup, "layers": n_layers, "rows": merged_shapes(where.get(SHAPES_KEY), setup, measured)}
        if s.runtime == "openvino":
            device = latency.setdefault("devices", {}).setdefault(OPENVINO_DEVICE, {"rows": []})
            device[SHAPES_KEY] = shapes
        else:
            latency[SHAPES_KEY] = shapes
        project.save_latency(latency)
    elif s.runtime == "openvino":  # a device of its own beside this machine's onnxruntime figures
        latency["devices"] = {**latency.get("devices", {}), OPENVINO_DEVICE: {"setup": setup, "rows": measured}}
        project.save_latency(latency)
    else:
        kept = {k: v for k, v in latency.items() if k in ("devices", SHAPES_KEY)}  # devices' figures, the table stay
        project.save_latency({"setup": setup, "rows": measured, **kept})
    events(StageEnded("latency", time.perf_counter() - t0))
    return {"rows": [dict(label=m["label"], **m["values"]) for m in measured], "setup": setup}


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(_child_main())
    print("usage: dynastudio latency DIR (this module's --child mode is internal)", file=sys.stderr)
    sys.exit(2)
