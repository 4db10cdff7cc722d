"""Calibrated static INT8 for the weight MatMuls (onnxruntime's QDQ quantization), and a sensitivity pass that keeps
in fp32 the few MatMuls whose quantization costs the most agreement.

Dynamic quantization (quantize.dynamic_matmuls) gives each MatMul's input one scale per batch, computed on the fly
from that batch's own min and max; a single outlier activation then crushes the resolution of every other value in
the tensor. Static quantization fixes each activation's range beforehand, from calibration rows run through the fp32
model, with a calibrator that may clip the outliers (percentile, entropy) instead of following them (min-max).
Weights are quantized per output channel either way.

Calibration rows and the rows the sensitivity pass scores on both come from the task's train split, never from
dev: dev only reports the result (verify.dev_agreement).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.batching import iterate_batches
from ..data.encoding import Encoded
from ..errors import ConfigError
from ..metrics import agreement
from .logits import quiet_export
from .runners import feed

CALIBRATORS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.999  # of |activation|, for the percentile calibrator (onnxruntime's default)

Feed = dict[str, np.ndarray]  # {input name: int64 array}, what an onnxruntime session takes


class FeedReader:
    """onnxruntime's CalibrationDataReader over a list of feeds (a protocol: get_next, then None when done)."""

    def __init__(self, feeds: Sequence[Feed]):
        self.feeds = list(feeds)
        self.at = 0

    def get_next(self) -> Feed | None:
        if self.at >= len(self.feeds):
            return None
        self.at += 1
        return self.feeds[self.at - 1]

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.feeds = self.feeds[start_index:end_index]
        self.at = 0


def train_feeds(
    train: Encoded,
    input_names: list[str],
    pad_id: int,
    calibration_rows: int = 256,
    scoring_rows: int = 512,
    seed: int = 0,
    batch_size: int = 32,
) -> tuple[list[Feed], list[Feed]]:
    """Two disjoint random samples of the train rows, as feeds: the calibration rows, then the rows the sensitivity
    pass scores on. Only train rows: the caller never passes dev."""
    idx = np.random.default_rng(seed).permutation(len(train))
    cal, scoring = idx[:calibration_rows], idx[calibration_rows : calibration_rows + scoring_rows]

    def feeds(rows: np.ndarray, same_width: bool) -> list[Feed]:
        enc = train.select(rows)
        if len(enc) == 0:
            return []
        out = [feed(b, input_names) for b in iterate_batches(enc, batch_size, shuffle=False, pad_id=pad_id)]
        if not same_width:
            return out
        width = max(len(r) for r in enc.input_ids)
        return [_pad_to(f, width, pad_id) for f in out]

    # onnxruntime's histogram calibrators (percentile, entropy) stack each tensor's outputs over the batches, so
    # every calibration batch must have one shape: padded to the sample's longest row (padded positions are
    # masked in attention, as in any padded batch a deployed model sees)
    return feeds(cal, True), feeds(scoring, False)


def _pad_to(f: Feed, width: int, pad_id: int) -> Feed:
    out = {}
    for k, v in f.items():
        fill = pad_id if k == "input_ids" else 0
        out[k] = np.concatenate([v, np.full((v.shape[0], width - v.shape[1]), fill, dtype=v.dtype)], axis=1)
    return out


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if name not in methods:
        raise ConfigError(f"calibration method '{name}' is not one of {', '.join(CALIBRATORS)}")
    return methods[name]


def matmul_nodes(path: Path) -> list[str]:
    """Names of the MatMul nodes with a constant (weight) input: the ones static quantization turns INT8."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in m.graph.initializer}
    return [n.name for n in m.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]


def static_matmuls(
    src: Path,
    dst: Path,
    external: bool,
    calibration: Sequence[Feed] | None,
    method: str = "percentile",
    exclude: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """onnxruntime static quantization in QDQ form: INT8 weights per output channel, UINT8 activations with ranges
    from `calibration` (train rows) by `method`; the MatMuls named in `exclude` stay fp32. `cache`: a file holding
    the calibrated ranges, written the first time and read after (the sensitivity pass quantizes many times with
    the same ranges); `calibration` may be None when it exists."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options: dict = {"CalibPercentile": PERCENTILE} if method == "percentile" else {}
    with quiet_export():
        quantize_static(
            str(src),
            str(dst),
            FeedReader(calibration) if calibration is not None else None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            use_external_data_format=external,
            calibrate_method=_method(method),
            calibration_cache_path=str(cache) if cache is not None else None,
            extra_options=options,
        )


@dataclass
class Sensitivity:
    """What the sensitivity pass found: agreement with fp32 on the scoring rows (train rows, not dev) with every
    MatMul quantized, each MatMul's gain when it alone stays fp32, and the ones kept in fp32."""

    method: str
    all_quantized: float
    gain: dict[str, float] = field(default_factory=dict)
    kept_fp32: list[str] = field(default_factory=list)
    agreement: float = 0.0  # with kept_fp32 excluded

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "agreement_all_quantized": self.all_quantized,
            "agreement": self.agreement,
            "kept_fp32": self.kept_fp32,
            "gain_per_matmul": self.gain,
        }


def sensitivity_pass(
    src: Path,
    calibration: Sequence[Feed],
    scoring: Sequence[Feed],
    reference: np.ndarray,
    run: Callable[[Path, Sequence[Feed]], np.ndarray],
    method: str = "percentile",
    max_fp32: int = 4,
    target: float = 0.995,
    regression: bool = False,
    check_stop: Callable[[], None] = lambda: None,
) -> Sensitivity:
    """Rank the MatMuls by how much agreement with fp32 (on `scoring`, train rows) each one costs when quantized,
    then keep the costliest in fp32, one at a time, until the agreement reaches `target` or `max_fp32` are kept.

    `run(path, feeds)` gives a quantized file's logits on feeds; `reference` is the fp32 model's on `scoring`.
    Agreement is metrics.agreement's (the same predicted class; Pearson r of the scores for regression).
    Ranges are calibrated once (on `calibration`) and reused for every trial."""
    nodes = matmul_nodes(src)
    with tempfile.TemporaryDirectory(prefix="dynabert-sensitivity-") as scratch:
        tmp = Path(scratch)
        cache = tmp / "ranges.json"

        def score(exclude: Sequence[str]) -> float:
            check_stop()
            out = tmp / "trial.onnx"
            static_matmuls(src, out, False, calibration if not cache.exists() else None, method, exclude, cache)
            return agreement(run(out, scoring), reference, regression=regression)[0]

        base = score(())
        result = Sensitivity(method, base, agreement=base)
        if base >= target or max_fp32 <= 0:
            return result
        for node in nodes:
            result.gain[node] = score([node]) - base
        ranked = [n for n, g in sorted(result.gain.items(), key=lambda kv: -kv[1]) if g > 0]
        best = base
        for node in ranked[:max_fp32]:
            trial = [*result.kept_fp32, node]
            got = score(trial)
            if got <= best:  # keeping it in fp32 brought nothing on top of the others: stop there
                break
            result.kept_fp32, best = trial, got
            if best >= target:
                break
        result.agreement = best
    return result
