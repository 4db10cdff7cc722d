"""The per-layer shape table a search predicts latency from: what one layer of each shape costs on a device.

The latency job times it on this machine (`dynastudio latency DIR --shapes`), a device kit made with `--shapes`
times it on a device; both end in latency.json under "shapes" (this machine's, or a device's). Torch-free.

The model: latency(sub-network) = base + the sum over its kept layers of layer(heads, neurons), where `base` is
the embeddings, pooler and classifier with no layer, and layer(h, n) is measured as (a model of L layers of that
shape - base) / L, so each entry is a layer's cost in context, fixed overheads paid once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SHAPES_KEY = "shapes"
BASE_LABEL = "shape-base"


def shape_label(heads: int, neurons: int) -> str:
    return f"shape-h{heads}-n{neurons}"


def parse_shape_label(label: str) -> tuple[int, int] | None:
    """(heads, neurons) of a shape model's label; None for the base and for anything else."""
    if not label.startswith("shape-h") or "-n" not in label:
        return None
    h, _, n = label[len("shape-h") :].partition("-n")
    return (int(h), int(n)) if h.isdigit() and n.isdigit() else None


def describe_shape(shape: dict, layers: bool = True) -> str:
    """A searched shape ({"layers", "heads", "neurons"}) in one line: 'layers 0/1/2/4; heads 3/6/6/6; neurons ...'."""
    return "; ".join(f"{k} {'/'.join(map(str, v))}" for k, v in shape.items() if layers or k != "layers")


def shape_multipliers(shape: dict, full_heads: int, full_layers: int) -> dict[str, float]:
    """What a searched shape puts where a cell has its multipliers: its share of the heads and of the layers."""
    n = max(1, len(shape["heads"]))
    return {
        "width_mult": round(sum(shape["heads"]) / (n * full_heads), 4),
        "depth_mult": round(len(shape["layers"]) / max(1, full_layers), 4),
    }


def shape_counts(num_heads: int, intermediate: int, width_mults) -> tuple[list[int], list[int]]:
    """The head and neuron counts the table covers: those the trained widths keep (int(), as the slicing counts)."""
    heads = sorted({max(1, int(num_heads * w + 1e-6)) for w in width_mults})
    neurons = sorted({max(1, int(intermediate * w + 1e-6)) for w in width_mults})
    return heads, neurons


@dataclass(frozen=True)
class ShapeTable:
    """One device's and one precision's table: milliseconds for the base and per layer shape."""

    precision: str
    base_ms: float
    layer_ms: dict[tuple[int, int], float]  # (heads, neurons) -> ms per layer
    layers_timed: int  # L of the models each entry was timed on
    setup: dict = field(default_factory=dict)

    def layer(self, heads: int, neurons: int) -> float:
        """One layer's cost; between timed counts, interpolated (bilinearly) from the nearest timed ones."""
        exact = self.layer_ms.get((heads, neurons))
        if exact is not None:
            return exact
        hs = sorted({h for h, _ in self.layer_ms})
        ns = sorted({n for _, n in self.layer_ms})

        def around(xs: list[int], x: int) -> tuple[int, int, float]:
            if x <= xs[0]:
                return xs[0], xs[0], 0.0
            if x >= xs[-1]:
                return xs[-1], xs[-1], 0.0
            hi = next(v for v in xs if v >= x)
            lo = max(v for v in xs if v <= x)
            return lo, hi, 0.0 if hi == lo else (x - lo) / (hi - lo)

        h0, h1, fh = around(hs, heads)
        n0, n1, fn = around(ns, neurons)
        v = self.layer_ms
        return (
            (1 - fh) * (1 - fn) * v[(h0, n0)]
            + fh * (1 - fn) * v[(h1, n0)]
            + (1 - fh) * fn * v[(h0, n1)]
            + fh * fn * v[(h1, n1)]
        )

    def predict(self, heads, neurons) -> float:
        """Predicted milliseconds of a sub-network with these per-layer counts (one entry per kept layer)."""
        return self.base_ms + sum(self.layer(h, n) for h, n in zip(heads, neurons))

    def smallest(self, min_layers: int) -> float:
        """The fastest any sub-network of at least `min_layers` layers can be."""
        return self.base_ms + min_layers * min(self.layer_ms.values())

    @staticmethod
    def from_rows(rows: list[dict], precision: str, layers: int, setup: dict | None = None) -> ShapeTable | None:
        """From timed rows ({"label", "values"}) of the base and the uniform L-layer shape models; None when
        the base or every layer shape is missing for this precision."""
        key = f"latency_{precision}_ms"
        times = {r["label"]: r.get("values", {}).get(key) for r in rows if isinstance(r, dict) and "label" in r}
        base = times.get(BASE_LABEL)
        if not isinstance(base, (int, float)) or not math.isfinite(base):
            return None
        per_layer = {}
        for label, ms in times.items():
            hn = parse_shape_label(label)
            if hn is not None and isinstance(ms, (int, float)) and math.isfinite(ms):
                per_layer[hn] = max(0.0, (ms - base) / layers)
        if not per_layer:
            return None
        return ShapeTable(precision, float(base), per_layer, layers, dict(setup or {}))


def shapes_of(latency: dict | None, device: str | None) -> dict | None:
    """latency.json's shape section for this machine (device None) or a device: {"setup", "layers", "rows"}."""
    if not latency:
        return None
    where = latency if device is None else latency.get("devices", {}).get(device, {})
    found = where.get(SHAPES_KEY) if isinstance(where, dict) else None
    return found if isinstance(found, dict) and isinstance(found.get("rows"), list) else None


def shape_table(latency: dict | None, device: str | None, precision: str) -> ShapeTable | None:
    found = shapes_of(latency, device)
    if found is None:
        return None
    return ShapeTable.from_rows(found["rows"], precision, int(found.get("layers") or 1), found.get("setup"))
