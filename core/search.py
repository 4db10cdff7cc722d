"""The search: the best sub-network of any shape (depth, heads and neurons per layer) under a device's latency budget.

Evolutionary, as HAT does: a population of shapes whose predicted latency fits the budget (store/shapes.py, from a
per-layer table timed on the target), each scored on train rows no stage trained on (never dev); the best half
are the parents of the next generation (mutation and crossover, kept within the budget). On this machine the best
few are then timed for real, and the best whose measured latency fits is kept. The results (search.json, written
here only) become points of the grid of their own kind, each scored on dev for reporting only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from .dynamic import ArchSpec, SubnetSpec, kept_layers, layer_plan, subnet_grid, subnet_size
from .errors import ConfigError, InternalError, ProjectError
from .events import LogMessage, StageEnded, StageProgress, StageStarted, StopToken
from .project import Project
from .requests import SearchRequest
from .store import LATENCY_PRECISIONS, Point, atomic_write_text, final_model_name, pareto_front
from .store.shapes import ShapeTable, shape_counts, shape_multipliers, shape_table

SEARCH_FILE = "search.json"
STATE_FILE = "search-state.json"  # the search under way (deleted when it ends): what a resume continues from
TIMED_FINALISTS = 5  # the best shapes (by score) timed for real at the end, on this machine


# ---- the space ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Space:
    """What a shape may be: one of the trained depths (its layers by the project's rule), and per layer one of
    the head and neuron counts the trained widths keep."""

    depths: tuple[tuple[int, ...], ...]  # the kept layers of each trained depth multiplier
    heads: tuple[int, ...]
    neurons: tuple[int, ...]

    @staticmethod
    def of(config, train) -> Space:
        L = config.num_hidden_layers
        depths = sorted({tuple(kept_layers(L, d, train.depth_rule)) for d in train.depth_mults}, key=len)
        heads, neurons = shape_counts(config.num_attention_heads, config.intermediate_size, train.width_mults)
        return Space(tuple(depths), tuple(heads), tuple(neurons))

    def random(self, rng: np.random.Generator) -> ArchSpec:
        layers = self.depths[rng.integers(len(self.depths))]
        return ArchSpec(
            layers,
            tuple(int(rng.choice(self.heads)) for _ in layers),
            tuple(int(rng.choice(self.neurons)) for _ in layers),
        )

    def mutate(self, a: ArchSpec, rng: np.random.Generator, p: float = 0.3) -> ArchSpec:
        layers = a.layers
        if rng.random() < p:  # another depth: the layers keep their counts by position, new ones are drawn
            layers = self.depths[rng.integers(len(self.depths))]
        heads, neurons = [], []
        for j in range(len(layers)):
            h = a.heads[j] if j < len(a.heads) and rng.random() >= p else int(rng.choice(self.heads))
            n = a.neurons[j] if j < len(a.neurons) and rng.random() >= p else int(rng.choice(self.neurons))
            heads.append(h)
            neurons.append(n)
        return ArchSpec(layers, tuple(heads), tuple(neurons))

    def shrink(self, a: ArchSpec, fits, rng: np.random.Generator) -> ArchSpec | None:
        """`a` with random layers' heads or neurons lowered a step at a time until it fits; None if even every
        layer at the smallest counts does not (then a shallower depth is the only way down)."""
        heads, neurons = list(a.heads), list(a.neurons)
        while not fits(ArchSpec(a.layers, tuple(heads), tuple(neurons))):
            options = [(j, "h") for j, h in enumerate(heads) if h > self.heads[0]]
            options += [(j, "n") for j, n in enumerate(neurons) if n > self.neurons[0]]
            if not options:
                return None
            j, what = options[rng.integers(len(options))]
            if what == "h":
                heads[j] = max(x for x in self.heads if x < heads[j])
            else:
                neurons[j] = max(x for x in self.neurons if x < neurons[j])
        return ArchSpec(a.layers, tuple(heads), tuple(neurons))

    def crossover(self, a: ArchSpec, b: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        if len(a.layers) != len(b.layers):
            return a if rng.random() < 0.5 else b
        pick = rng.random(len(a.layers)) < 0.5
        return ArchSpec(
            a.layers,
            tuple(x if k else y for k, x, y in zip(pick, a.heads, b.heads)),
            tuple(x if k else y for k, x, y in zip(pick, a.neurons, b.neurons)),
        )


def as_arch(config, spec: SubnetSpec, rule: str) -> ArchSpec:
    kept, heads, neurons = layer_plan(config, spec, rule)
    return ArchSpec(tuple(kept), tuple(heads), tuple(neurons))


def predicted(table: ShapeTable, a: ArchSpec) -> float:
    return table.predict(a.heads, a.neurons)


# ---- checks: one line for each request that cannot run -------------------------------------------
def checked_table(project: Project, request: SearchRequest, events, stop: StopToken) -> ShapeTable:
    """The shape table for the request's device and precision. On this machine a missing one is timed first (the
    latency job's shapes, a minute or two); a device's comes from its kit, else a one-line error says how."""
    r, root = request, project.root
    if r.precision not in LATENCY_PRECISIONS:
        raise ConfigError(f"--precision {r.precision}: choose one of {', '.join(LATENCY_PRECISIONS)}")
    table = shape_table(project.load_latency(), r.device, r.precision)
    if table is not None:
        return table
    if r.device is None:
        from .latency import latency_job
        from .requests import LatencyRequest

        events(LogMessage(f"search: timing the {r.precision} layer shapes on this machine first"))
        latency_job(project, LatencyRequest(formats=(r.precision,), shapes=True), events, stop)
        table = shape_table(project.load_latency(), None, r.precision)
        if table is None:
            raise InternalError("search: the layer shapes just timed cannot be read back: please report it")
        return table
    latency = project.load_latency()
    known = sorted((latency or {}).get("devices", {}))
    if r.device not in known:
        raise ProjectError(
            f"{root}: no latency from device '{r.device}' ({'known: ' + ', '.join(known) if known else 'none yet'}): "
            f"make a kit with `dynastudio device-kit {root} --out KIT --shapes`, run it there and "
            f"`dynastudio latency {root} --import FILE`"
        )
    raise ProjectError(
        f"{root}: device '{r.device}' has no {r.precision} layer shapes timed: make a kit with "
        f"`dynastudio device-kit {root} --out KIT --shapes --formats {r.precision}`, run `python run_kit.py` on the "
        f"device and `dynastudio latency {root} --import FILE`"
    )


def check_ready(project: Project) -> None:
    if not project.is_done("depth"):
        stage = "width" if not project.is_done("width") else "depth"
        raise ProjectError(
            f"{project.root}: the search needs stage 2 (width x depth) done; the {stage} stage is not: run "
            f"`dynastudio run {project.root} --until depth`"
        )


def check_budget(table: ShapeTable, space: Space, request: SearchRequest, where: str) -> None:
    import math

    b = request.budget_ms
    if not math.isfinite(b) or b <= 0:
        raise ConfigError(f"--budget-ms {b:g}: give a latency budget above 0 ms, e.g. --budget-ms 5")
    fastest = table.base_ms + len(space.depths[0]) * min(table.layer(h, n) for h in space.heads for n in space.neurons)
    if b < fastest:
        raise ConfigError(
            f"nothing fits {b:g} ms on {where}: the smallest sub-network of the search space takes about "
            f"{fastest:.2f} ms ({len(space.depths[0])} layers of {min(space.heads)} heads and {min(space.neurons)} "
            f"neurons, predicted at {request.precision}): raise --budget-ms to {fastest:.2f} or more"
        )


# ---- the rows a shape is scored on -----------------------------------------------------------------
def search_rows(inputs, n: int, events):
    """(Encoded rows, where they come from): train rows no stage trained on; failing those, the held-out importance
    rows (with a warning when the student stages trained on them too). Never dev."""
    from .data.encoding import encode
    from .data.task import load_task_data
    from .prepare import unused_train_rows

    t = inputs.cfg.train
    table = unused_train_rows(load_task_data(inputs.cfg.data), t, n) if t.max_train_examples is not None else None
    if table is not None and len(table) >= min(n, 200):
        enc = encode(table, inputs.tokenizer, t.max_seq_length)
        enc.is_regression = inputs.task.is_regression
        return enc, f"{len(enc)} train rows left out by max_train_examples (no stage trained on them)"
    held = inputs.heldout
    if not len(held):
        raise ProjectError(
            f"{inputs.project.root}: no train rows are held out to score the search on: set train.importance_split "
            "to heldout (or max_train_examples below the train file's rows) and run again"
        )
    idx = np.random.default_rng(0).permutation(len(held))[:n]
    from .data.encoding import Encoded

    enc = Encoded(
        [held.input_ids[i] for i in idx],
        None if held.token_type_ids is None else [held.token_type_ids[i] for i in idx],
        [held.labels[i] for i in idx],
        held.is_regression,
    )
    if t.reuse_importance_rows:
        events(
            LogMessage(
                "the search scores shapes on the held-out importance rows, which the width and depth stages also "
                "trained on (train.reuse_importance_rows): its scores favour shapes that fit them; dev stays unseen",
                "warning",
            )
        )
        return enc, f"{len(enc)} held-out importance rows (the student stages trained on them)"
    return enc, f"{len(enc)} held-out importance rows (no stage trained on them)"


# ---- the job ------------------------------------------------------------------------------------
def search_job(project: Project, request: SearchRequest, events, stop: StopToken) -> dict:
    """Search, then write the result into search.json; returns the run's record (see module doc)."""
    from .evaluate import eval_batch_size, predict
    from .metrics import compute_metric
    from .prepare import prepare_inputs

    r = request
    check_ready(project)
    table = checked_table(project, r, events, stop)
    where = f"device '{r.device}'" if r.device else "this machine"
    name = final_model_name(project)
    model = project.load_model(name)
    mc: Any = model.config
    cfg = project.config
    rule = cfg.train.depth_rule
    space = Space.of(model.config, cfg.train)
    check_budget(table, space, r, where)
    if r.generations < 1 or r.population < 4 or r.rows < 10:
        raise ConfigError("search: --generations at least 1, --population at least 4, --rows at least 10")

    t0 = time.perf_counter()
    inputs = prepare_inputs(project, events)
    rows, rows_source = search_rows(inputs, r.rows, events)
    labels = np.asarray(rows.labels)
    metric = inputs.task.metric
    batch = eval_batch_size(cfg, inputs.device)
    key = json.dumps({**asdict(r), "model": name}, sort_keys=True)
    state = _load_state(project, key)
    rng = np.random.default_rng(r.seed)
    if state is not None:
        rng.bit_generator.state = state["rng"]
        events(LogMessage(f"resuming the search at generation {state['generation'] + 1} of {r.generations}"))
    scores: dict[str, float] = dict(state["scores"]) if state else {}
    population = [ArchSpec.from_json(a) for a in state["population"]] if state else []
    start = state["generation"] if state else 0
    history = list(state["history"]) if state else []
    archs = {k: ArchSpec.from_json(v) for k, v in state["archs"].items()} if state else {}

    def score(a: ArchSpec) -> float:
        if a.label not in scores:
            stop.check()
            logits = predict(model, rows, a, rule, batch, inputs.pad_id, inputs.device)
            scores[a.label] = float(compute_metric(metric, logits, labels)["score"])
        archs[a.label] = a
        return scores[a.label]

    def fits(a: ArchSpec) -> bool:
        return predicted(table, a) <= r.budget_ms

    def draw(make) -> ArchSpec | None:
        """A shape from `make`, brought within the budget by `Space.shrink` when it is over."""
        for _ in range(20):
            a = space.shrink(make(), fits, rng)
            if a is not None:
                return a
        return None

    def offspring(parents: list[ArchSpec]) -> ArchSpec:
        """A parent mutated, or two parents crossed (then mutated a little)."""
        if len(parents) < 2 or rng.random() < 0.5:
            return space.mutate(parents[rng.integers(len(parents))], rng)
        i, j = rng.choice(len(parents), 2, replace=False)
        return space.mutate(space.crossover(parents[i], parents[j], rng), rng, p=0.1)

    total = r.generations * r.population
    events(StageStarted("search", total))
    events(
        LogMessage(
            f"search: {r.generations} generations of {r.population} shapes within {r.budget_ms:g} ms on {where} "
            f"({r.precision}), scored on {rows_source}"
        )
    )
    if not population:  # the grid's cells that fit start it: the search can only do better than they do
        cells = [as_arch(model.config, s, rule) for s in subnet_grid(cfg.train.width_mults, cfg.train.depth_mults)]
        population = [a for a in cells if fits(a)][: r.population // 2]
        for _ in range(10 * r.population):
            if len(population) >= r.population:
                break
            a = draw(lambda: space.random(rng))
            if a is not None and a.label not in {p.label for p in population}:
                population.append(a)
    for gen in range(start, r.generations):
        ranked = sorted(population, key=lambda a: (-score(a), predicted(table, a)))
        events(StageProgress("search", (gen + 1) * r.population, total))
        best = ranked[0]
        history.append([gen + 1, scores[best.label], predicted(table, best), len(scores)])
        events(
            LogMessage(
                f"search: generation {gen + 1}/{r.generations}: best {metric} {scores[best.label]:.4f} at "
                f"{predicted(table, best):.2f} ms predicted ({best.describe()}); {len(scores)} shapes scored"
            )
        )
        if gen + 1 == r.generations:
            population = ranked
            break
        parents = ranked[: max(2, r.population // 2)]
        children: list[ArchSpec] = []
        seen = {a.label for a in parents}
        tries = 0
        while len(parents) + len(children) < r.population and tries < 50 * r.population:
            tries += 1
            a = draw(partial(offspring, parents))
            if a is not None and a.label not in seen and a.label not in scores:  # new shapes only: scores are kept
                seen.add(a.label)
                children.append(a)
        population = parents + children
        _save_state(project, key, gen + 1, population, scores, archs, history, rng)
    search_seconds = time.perf_counter() - t0

    # the best first; on a tie the faster (by prediction), as the generations rank them
    finalists = sorted(
        (archs[k] for k in scores if fits(archs[k])), key=lambda a: (-scores[a.label], predicted(table, a), a.label)
    )
    cell_of = {
        as_arch(model.config, c, rule).label: c.label for c in subnet_grid(cfg.train.width_mults, cfg.train.depth_mults)
    }
    # the front of predicted latency against held-out score, beside the kept shape (the cells are on the grid already)
    front = [
        archs[p.label]
        for p in pareto_front([Point(k, r.precision, predicted(table, archs[k]), scores[k]) for k in scores])
        if p.label not in cell_of
    ]
    measured: dict[str, dict] = {}
    if r.device is None and r.measure:
        finalists = finalists[:TIMED_FINALISTS]
        timed = finalists + [a for a in front[:8] if a not in finalists]
        events(LogMessage(f"search: timing the best {len(finalists)} shapes and the front on this machine"))
        measured = _time_specs(project, timed, r.precision, stop)
    chosen = None
    for a in finalists:
        ms = measured.get(a.label, {}).get(f"latency_{r.precision}_ms")
        if ms is None or ms <= r.budget_ms:
            chosen = a
            break
    fits_measured = True
    if chosen is None:  # timed, every finalist was above the budget: keep the best, and say by how much
        chosen, fits_measured = finalists[0], False
        ms = measured[chosen.label][f"latency_{r.precision}_ms"]
        events(
            LogMessage(
                f"search: none of the best {len(finalists)} shapes measured within {r.budget_ms:g} ms here; kept the "
                f"best, {chosen.label}, at {ms:.2f} ms ({100 * (ms / r.budget_ms - 1):+.1f} %; predicted "
                f"{predicted(table, chosen):.2f} ms): timings drift by a few per cent, so measure it again, or search "
                "with a lower --budget-ms",
                "warning",
            )
        )
    keep = [chosen] + [a for a in front if a.label != chosen.label][:7]
    dev = {}
    for a in keep:
        stop.check()
        logits = predict(model, inputs.dev, a, rule, batch, inputs.pad_id, inputs.device)
        dev[a.label] = compute_metric(metric, logits, np.asarray(inputs.dev.labels))
    full_flops = subnet_size(model.config, SubnetSpec(), rule, cfg.train.max_seq_length)["flops"]
    points = []
    for a in keep:
        size = subnet_size(model.config, a, rule, cfg.train.max_seq_length)
        point = {
            "label": a.label,
            "kind": "searched",
            "searched": a.to_json(),
            **shape_multipliers(a.to_json(), mc.num_attention_heads, mc.num_hidden_layers),
            "metric": metric,
            "value": dev[a.label]["score"],
            "metrics": dev[a.label],
            "search_score": scores[a.label],
            "cell": cell_of.get(a.label),  # the grid cell of the same shape, if it is one
            f"predicted_{r.precision}_ms": predicted(table, a),
            **size,
            "flops_rel": size["flops"] / full_flops,
            **measured.get(a.label, {}),
        }
        if r.device is not None:  # nothing is timed on a device from here: its chart places the point by prediction
            point.update({f"latency_{r.precision}_ms": predicted(table, a), "latency_predicted": True})
        points.append(point)
    record = {
        "id": time.strftime("%Y%m%dT%H%M%S"),
        "budget_ms": r.budget_ms,
        "device": r.device,
        "precision": r.precision,
        "model": name,
        "rows": rows_source,
        "generations": r.generations,
        "population": r.population,
        "seed": r.seed,
        "scored": len(scores),
        "history": history,
        "search_seconds": round(search_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "chosen": chosen.label,
        "chosen_fits_measured": fits_measured,  # False: timed here, even the chosen shape was above the budget
        # the grid's cells that fit, with their held-out scores: what the chosen shape had to beat on those rows
        "cells": {cell_of[k]: v for k, v in scores.items() if k in cell_of},
        "predictor_check": [
            {"label": a.label, "predicted_ms": predicted(table, a), "measured_ms": m[f"latency_{r.precision}_ms"]}
            for a in dict.fromkeys(finalists + keep)
            if (m := measured.get(a.label)) and f"latency_{r.precision}_ms" in m
        ],
        "points": points,
    }
    save_run(project, record)
    _drop_state(project)
    events(StageEnded("search", time.perf_counter() - t0))
    return record


def _time_specs(project: Project, specs: list[ArchSpec], precision: str, stop: StopToken) -> dict[str, dict]:
    """Measured latency of each shape on this machine (the latency job's child and settings), by label."""
    from .latency import LatencySettings, _run_child

    s = LatencySettings(1, project.config.train.max_seq_length, 1, (precision,), 50, 10).checked()
    out: dict[str, dict] = {}
    done: list[dict] = []

    def on_message(msg: dict) -> None:
        if "row" in msg:
            done.append(msg["row"]["values"])

    _run_child(
        {
            "root": str(project.root.resolve()),
            "specs": [a.to_json() for a in specs],
            "settings": {**asdict(s), "formats": list(s.formats)},
            "score": False,
        },
        s.threads,
        on_message,
        stop,
    )
    for a, values in zip(specs, done):
        out[a.label] = values
    return out


# ---- search.json and the state of a search under way ----------------------------------------------
def load_runs(project) -> list[dict]:
    path = project.root / SEARCH_FILE
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    except (ValueError, AttributeError):
        raise ProjectError(f"{path}: corrupted: delete it (the searches it kept are lost)") from None
    return [x for x in runs if isinstance(x, dict)]


def save_run(project, record: dict) -> None:
    runs = load_runs(project) + [record]
    atomic_write_text(project.root / SEARCH_FILE, json.dumps({"runs": runs}, indent=2))


def _load_state(project, key: str) -> dict | None:
    path = project.root / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def _save_state(project, key, generation, population, scores, archs, history, rng) -> None:
    state = {
        "key": key,
        "generation": generation,
        "population": [a.to_json() for a in population],
        "scores": scores,
        "archs": {k: a.to_json() for k, a in archs.items() if k in scores},
        "history": history,
        "rng": rng.bit_generator.state,
    }
    atomic_write_text(project.root / STATE_FILE, json.dumps(state))


def _drop_state(project) -> None:
    (project.root / STATE_FILE).unlink(missing_ok=True)
