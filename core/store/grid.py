"""The results grid as typed rows (per precision, per device), the Pareto front and the best under a budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ProjectError

LATENCY_PRECISIONS = ("fp32", "int8", "fp16")
# the export format whose file each precision's figures are measured on (the latency job writes it with export's writer)
EXPORT_FORMAT_OF = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16"}
# what a latency measurement adds to a row (the only writer of these keys is Figures.to_values)
MEASURED_PREFIXES = ("latency_", "size_onnx_")


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


@dataclass(frozen=True)
class Figures:
    """One precision of one sub-network on one device: latency (ms per batch), ONNX file size, and that precision's
    own dev metric (INT8 and fp16 measured on their files; fp32's is the evaluation's, kept on the row)."""

    median_ms: float | None = None
    p90_ms: float | None = None
    size_mb: float | None = None
    metric: float | None = None

    @staticmethod
    def from_values(values: dict, precision: str) -> Figures:
        p = precision
        return Figures(
            _number(values.get(f"latency_{p}_ms")),
            _number(values.get(f"latency_{p}_p90_ms")),
            _number(values.get(f"size_onnx_{p}_mb")),
            _number(values.get(f"metric_{p}")),
        )

    def to_values(self, precision: str) -> dict[str, float]:
        """The keys latency.json keeps them under (those that are set)."""
        p = precision
        keys = {
            f"latency_{p}_ms": self.median_ms,
            f"latency_{p}_p90_ms": self.p90_ms,
            f"size_onnx_{p}_mb": self.size_mb,
            f"metric_{p}": self.metric,
        }
        return {k: v for k, v in keys.items() if v is not None}


def _precisions_in(values: dict) -> list[str]:
    """The precisions a row's keys hold figures for: fp32, int8, fp16 first, then any other, by name."""
    found = set()
    for k in values:
        for prefix, suffix in (("latency_", "_p90_ms"), ("latency_", "_ms"), ("size_onnx_", "_mb"), ("metric_", "")):
            if k.startswith(prefix) and k.endswith(suffix) and len(k) > len(prefix) + len(suffix):
                found.add(k[len(prefix) : len(k) - len(suffix)])
                break
    return _in_order(found)


def _in_order(precisions: set[str]) -> list[str]:
    order = {p: i for i, p in enumerate(LATENCY_PRECISIONS)}
    return sorted(precisions, key=lambda p: (order.get(p, len(order)), p))


@dataclass(frozen=True)
class GridRow:
    """One sub-network of the grid: its dev metric, sizes, and per precision its measured figures."""

    label: str
    width_mult: float
    depth_mult: float
    value: float | None = None  # the dev metric at fp32 (PyTorch); None when measured before `evaluate` ran
    metrics: dict = field(default_factory=dict)  # every metric the evaluation computed
    encoder_params: int | None = None
    total_params: int | None = None
    flops: float | None = None
    flops_rel: float | None = None  # of the full model's FLOPs, at the project's sequence length
    precisions: dict[str, Figures] = field(default_factory=dict)
    kind: str = "cell"  # "cell": one of the trained grid's; "searched": a shape `dynastudio search` found
    searched: dict | None = None  # a searched row's shape: {"layers", "heads", "neurons"} (core.dynamic.ArchSpec)
    latency_predicted: bool = False  # a searched row on a device: its latency is the shape table's prediction

    def figures(self, precision: str) -> Figures | None:
        return self.precisions.get(precision)

    def latency_ms(self, precision: str) -> float | None:
        f = self.precisions.get(precision)
        return f.median_ms if f is not None else None

    def metric_at(self, precision: str) -> float | None:
        """The dev metric of this precision's own model: never INT8 speed with fp32 accuracy."""
        if precision == "fp32":
            return self.value
        f = self.precisions.get(precision)
        return f.metric if f is not None else None

    @staticmethod
    def from_dict(r: dict) -> GridRow:
        params = {k: int(r[k]) for k in ("encoder_params", "total_params") if _number(r.get(k)) is not None}
        return GridRow(
            str(r["label"]),
            float(r["width_mult"]),
            float(r["depth_mult"]),
            _number(r.get("value")),
            dict(r["metrics"]) if isinstance(r.get("metrics"), dict) else {},
            params.get("encoder_params"),
            params.get("total_params"),
            _number(r.get("flops")),
            _number(r.get("flops_rel")),
            {p: Figures.from_values(r, p) for p in _precisions_in(r)},
            "searched" if isinstance(r.get("searched"), dict) else "cell",
            dict(r["searched"]) if isinstance(r.get("searched"), dict) else None,
            r.get("latency_predicted") is True,
        )


@dataclass(frozen=True)
class Grid:
    """The results grid: the evaluation joined with one device's latency figures (this machine's when `device`
    is None). `setup` says how the latency was measured; `devices` lists those a device kit measured."""

    task: str | None
    metric: str | None
    model: str | None
    depth_rule: str | None
    dev_examples: int | None
    rows: tuple[GridRow, ...]
    teacher: dict = field(default_factory=dict)
    chance: float | None = None  # what always predicting the majority class (or the mean) scores
    flops_seq_len: int = 128  # results written before 0.2.1 counted FLOPs at 128 tokens
    device: str | None = None
    setup: dict | None = None
    devices: tuple[str, ...] = ()

    @staticmethod
    def from_dict(d: dict, device: str | None = None) -> Grid:
        """Parse the grid's JSON form (`ProjectStore.load_results`), the one place its keys are decoded."""
        rows = tuple(GridRow.from_dict(r) for r in d.get("rows", []) if isinstance(r, dict) and "label" in r)
        seq, teacher, setup = d.get("flops_seq_len"), d.get("teacher"), d.get("latency_setup")
        return Grid(
            d.get("task"),
            d.get("metric"),
            d.get("model"),
            d.get("depth_rule"),
            d.get("dev_examples"),
            rows,
            teacher if isinstance(teacher, dict) else {},
            _number(d.get("chance")),
            seq if isinstance(seq, int) else 128,
            device,
            setup if isinstance(setup, dict) else None,
            tuple(d.get("latency_devices") or ()),
        )

    def precisions(self, figure: str = "median_ms") -> list[str]:
        """The precisions some row has `figure` for (a latency, unless told), fp32, int8, fp16 first."""
        return _in_order({p for r in self.rows for p, f in r.precisions.items() if getattr(f, figure) is not None})

    def row(self, label: str) -> GridRow | None:
        return next((r for r in self.rows if r.label == label), None)

    @property
    def where(self) -> str:
        """Where the latency was measured, in words."""
        name = self.device or (self.setup or {}).get("device") or "this machine"
        return f"device '{name}'" if self.device else f"this machine ({name})"


# ---- choosing a sub-network: the Pareto front, the best under a budget ---------------------------
FLOPS_AXIS = "flops_rel"  # relative FLOPs: no measurement needed
ANY_LATENCY = "latency"  # every measured precision, each point at its own dev metric
BUDGET_PRECISIONS = (*LATENCY_PRECISIONS, "any")


def latency_axis(precision: str) -> str:
    return f"latency_{precision}_ms"


def axis_precision(axis: str) -> str | None:
    """The precision of a single-precision latency axis; None for the FLOPs axis and ANY_LATENCY."""
    if axis.startswith("latency_") and axis.endswith("_ms") and len(axis) > len("latency__ms"):
        return axis[len("latency_") : -len("_ms")]
    return None


@dataclass(frozen=True)
class Point:
    """A sub-network at one precision, placed on a chart: x is its cost (ms or relative FLOPs), y its dev metric."""

    label: str
    precision: str
    x: float
    y: float


def grid_points(grid: Grid, axis: str) -> list[Point]:
    """The points of the evaluated rows on `axis`. A point pairs a precision's latency with that precision's own
    dev metric; a precision whose metric was not measured has no points, nor has a row `evaluate` has not scored."""
    out = []
    for r in grid.rows:
        if r.value is None:
            continue
        if axis == FLOPS_AXIS:
            if r.flops_rel is not None:
                out.append(Point(r.label, "fp32", r.flops_rel, r.value))
            continue
        for p in list(r.precisions) if axis == ANY_LATENCY else [axis_precision(axis) or ""]:
            x, y = r.latency_ms(p), r.metric_at(p)
            if x is not None and y is not None:
                out.append(Point(r.label, p, x, y))
    return out


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both lower x and higher y, by increasing x."""
    front: list[Point] = []
    best = -math.inf
    for p in sorted(points, key=lambda p: (p.x, -p.y)):  # by x, then best y first
        if p.y > best:
            front.append(p)
            best = p.y
    return front


def best_under(points: list[Point], budget: float) -> Point | None:
    """The point with the highest metric among x <= budget (the cheaper one on ties); None if nothing fits.
    The Explore page's budget slider and `dynastudio report --budget-ms` both ask this."""
    fits = [p for p in points if p.x <= budget + 1e-12]
    return min(fits, key=lambda p: (-p.y, p.x)) if fits else None


def best_under_budget(grid: Grid, budget_ms: float, precision: str = "any", root: Path | str = "DIR") -> Point:
    """The best sub-network within `budget_ms` of latency on the grid's device, at `precision` (or any); a
    one-line error when the project has no latency figures, or nothing fits. `root` names the project in them."""
    if precision not in BUDGET_PRECISIONS:
        raise ConfigError(f"--precision {precision}: choose one of {', '.join(BUDGET_PRECISIONS)}")
    if not math.isfinite(budget_ms) or budget_ms <= 0:
        raise ConfigError(f"--budget-ms {budget_ms:g}: give a latency budget above 0 ms, e.g. --budget-ms 5")
    measured = grid.precisions()
    if not measured:
        raise ProjectError(
            f"{root}: no latency figures yet: measure them with `dynastudio latency {root}` "
            f"(or import a device's with `dynastudio latency {root} --import FILE`)"
        )
    if precision != "any" and precision not in measured:
        raise ProjectError(
            f"no {precision} latency measured on {grid.where} (it has {', '.join(measured)}): "
            f"measure it with `dynastudio latency {root} --formats {precision}`, or use --precision any"
        )
    points = grid_points(grid, ANY_LATENCY if precision == "any" else latency_axis(precision))
    if not points:
        what = "evaluate" if not any(r.value is not None for r in grid.rows) else "latency with INT8/fp16 formats"
        raise ProjectError(
            f"no sub-network has both a latency and a dev metric yet: run {what} first "
            f"(`dynastudio run {root}` scores them)"
        )
    best = best_under(points, budget_ms)
    if best is None:
        fastest = min(points, key=lambda p: p.x)
        raise ConfigError(
            f"nothing fits {budget_ms:g} ms on {grid.where}: the fastest, {fastest.label}"
            + (f" in {fastest.precision}" if fastest.precision != "fp32" else "")
            + f", takes {fastest.x:.2f} ms: raise --budget-ms"
        )
    return best
