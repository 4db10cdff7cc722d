"""INT8 export: the weight MatMuls quantized by a method, the lookup tables stored with a scale per row."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InternalError

# smaller lookup tables stay fp32: the few bytes saved are not worth a rounding (quantaware emulates the same rule)
from ..quantaware import ACT_LEVELS, SCALE_FLOOR, SYMMETRIC_ZERO, WEIGHT_QMAX
from ..quantaware import TABLE_MIN_ELEMENTS as MIN_TABLE_ELEMENTS
from ..requests import INT8_METHODS
from .logits import quiet_export

# the inputs per_token_matmuls quantizes symmetrically: LayerNorm outputs and attention contexts (reshaped); the others
# (an FFN activation's output) get a zero point per row
SYMMETRIC_AFTER = ("LayerNormalization", "Reshape", "Transpose")
MS_DOMAIN = "com.microsoft"  # onnxruntime's own operators
RARE_GROUP = 32  # values per scale and offset in the 4-bit rows of rare tokens
TABLE_KINDS = ("int8", "fp16")


def quantize_int8(
    src: Path, dst: Path, tables: str = "int8", rare_from: int | None = None, method: str = "per-token"
) -> Path:
    """The INT8 ONNX file of an fp32 one: the weight MatMuls by `method` (INT8_METHODS: `per_token_matmuls`, the
    default, or onnxruntime's `dynamic_matmuls`), the lookup tables (word and position embeddings) by
    `compact_lookup_tables`: one INT8 value per entry with one scale per row (`tables="int8"`, the default), or as
    fp16 (`tables="fp16"`). onnxruntime's own Gather quantization uses one scale for the whole table, which flipped
    0.8% of SST-2 dev predictions of a MiniLM; a scale per row (per token) keeps each row's own range.
    """
    if method not in INT8_METHODS:
        raise ConfigError(f"INT8 method {method!r}: choose one of {', '.join(INT8_METHODS)}")
    big = Path(str(src) + ".data").exists()  # the exporter's external-data file for > 2 GB models
    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as scratch:
        tmp = Path(scratch) / "int8.onnx"
        (per_token_matmuls if method == "per-token" else dynamic_matmuls)(Path(src), tmp, big)
        compact_lookup_tables(tmp, Path(dst), big, tables, rare_from=rare_from)
    return Path(dst)


# ---- the weight MatMuls: one function per method, each writing an ONNX file whose MatMuls are INT8 and whose
# lookup tables are still fp32 (quantize_int8 compacts those the same way whatever the method) -------------
def dynamic_matmuls(src: Path, dst: Path, external: bool, exclude: Sequence[str] = ()) -> None:
    """onnxruntime dynamic quantization: INT8 weights per output channel, activations quantized on the fly
    (no calibration data needed). `exclude`: MatMul nodes left in fp32 (bench/int8_sensitivity.py)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_export():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=list(exclude),
            use_external_data_format=external,
        )


def per_token_matmuls(src: Path, dst: Path, external: bool, exclude: Sequence[str] = ()) -> None:
    """INT8 weights per output channel (symmetric, as `dynamic_matmuls`), each input quantized with a range per token.

    onnxruntime's dynamic quantization gives a MatMul's whole input one range. In a BERT-family model a few tokens
    ([CLS], [SEP], punctuation) carry activations far larger than the others', so that one range leaves the other
    tokens a handful of levels: on SST-2 it flipped 0.6-2.2 % of a MiniLM's dev predictions. Here each token's row
    of the input gets its own scale (bench/int8_paths.py measures both):
      - the FFN output's input (the activation function's output, lopsided around 0; any input that is not made
        by a LayerNormalization or a Reshape): UINT8 with a scale and zero point per row, lo and hi the row's
        minimum and maximum widened to include 0, s = (hi - lo) / 255, z = round(-lo / s); onnxruntime's integer
        MatMuls take one zero point for the whole input, so the result is corrected by z * (the column sums of
        the INT8 weight);
      - every other input (LayerNorm outputs, attention contexts): symmetric, s = max |x| / 127, zero point 128,
        which the fused MatMul takes as it is.
    q = QuantizeLinear(x, s, z) blocked over the row (opset 21); y = MatMulIntegerToFloat(q, W_q) * w_scale * s.
    An input is quantized once for all the MatMuls that read it (query, key, value). A row's result depends on
    that row alone, so a padded batch gives each row's own result. quantaware.activation_per_token emulates this.
    `exclude`: MatMul nodes left in fp32.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    b = _GraphBuilder(g)
    inits = {i.name: i for i in g.initializer}
    producer = {o: n.op_type for n in g.node for o in n.output}

    def lopsided(x: str) -> bool:
        """Not a LayerNorm's output nor an attention context (a reshape of one): an FFN activation's output."""
        return producer.get(x) not in SYMMETRIC_AFTER

    for name, value, dtype in (
        ("axes", -1, np.int64),
        ("zero", 0.0, np.float32),
        ("one", 1.0, np.float32),
        ("levels", float(ACT_LEVELS), np.float32),
        ("half_levels", float(WEIGHT_QMAX), np.float32),
        ("tiny", SCALE_FLOOR, np.float32),
        ("mid", SYMMETRIC_ZERO, np.uint8),
    ):
        b.const(f"pt_{name}", np.array([value] if name == "axes" else value, dtype))
    nodes: list = []
    quantized: dict[tuple[str, bool], tuple[str, str, str | None]] = {}
    weights: dict[str, int] = {}  # weight initializers quantized so far -> their input width

    def op(name: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(b.node(name, inputs, out, **attrs))
        return out

    def quantize_input(x: str, width: int, lopsided: bool) -> tuple[str, str, str | None]:
        """The input's UINT8 values, its scale per row and (lopsided) its zero point per row, as fp32."""
        if (x, lopsided) in quantized:
            return quantized[(x, lopsided)]
        t = f"{x}_pt{'a' if lopsided else 's'}_"
        z: str | None = None
        if lopsided:
            lo = op("Min", [op("ReduceMin", [x, "pt_axes"], t + "min", keepdims=1), "pt_zero"], t + "lo")
            hi = op("Max", [op("ReduceMax", [x, "pt_axes"], t + "max", keepdims=1), "pt_zero"], t + "hi")
            span = op("Div", [op("Sub", [hi, lo], t + "span"), "pt_levels"], t + "s0")
            s = op("Max", [span, "pt_tiny"], t + "scale")
            # z = round(-lo / s) by QuantizeLinear itself (a block per value: s has -lo's shape)
            z8 = op("QuantizeLinear", [op("Neg", [lo], t + "nlo"), s], t + "z8", axis=-1, block_size=1)
            z = op("Cast", [z8], t + "zf", to=TensorProto.FLOAT)
        else:
            top = op("ReduceMax", [op("Abs", [x], t + "abs"), "pt_axes"], t + "top", keepdims=1)
            s = op("Max", [op("Div", [top, "pt_half_levels"], t + "s0"), "pt_tiny"], t + "scale")
            z8 = op("Expand", ["pt_mid", op("Shape", [s], t + "shape")], t + "z8")
        # one block per row: the block is the whole last axis, whose size the weight fixes
        q = op("QuantizeLinear", [x, s, z8], t + "q", axis=-1, block_size=width)
        quantized[(x, lopsided)] = (q, s, z)
        return quantized[(x, lopsided)]

    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 and n.name not in exclude else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            nodes.append(n)
            continue
        name, out = w.name, n.output[0]
        if name not in weights:  # the exporter shares one initializer between equal weights: quantize it once
            weight = numpy_helper.to_array(w).astype(np.float32)  # (in, out): a MatMul's weight is W^T
            g.initializer.remove(w)
            w_scale = np.abs(weight).max(axis=0) / WEIGHT_QMAX
            w_scale[w_scale == 0] = 1.0
            w_q = np.clip(np.rint(weight / w_scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
            b.const(name + "_q", w_q)
            b.const(name + "_scale", w_scale.astype(np.float32))
            # for an asymmetric input, the zero point's correction: each output channel's INT8 sum, times its scale
            b.const(name + "_colsum", (w_q.astype(np.int32).sum(axis=0) * w_scale).astype(np.float32))
            weights[name] = int(weight.shape[0])
        asymmetric = lopsided(n.input[0])
        q, s, z = quantize_input(n.input[0], weights[name], asymmetric)
        # onnxruntime's fused integer MatMul scales per output channel; its input scale is one number (1 here)
        ins = [q, name + "_q", "pt_one", name + "_scale"] + ([] if asymmetric else ["pt_mid"])
        acc = op("MatMulIntegerToFloat", ins, out + "_pt_acc", domain=MS_DOMAIN)
        if z is not None:
            acc = op("Sub", [acc, op("Mul", [z, name + "_colsum"], out + "_pt_zc")], out + "_pt_fixed")
        op("Mul", [acc, s], out)
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    used = {i for n in nodes for i in n.input}
    for t in [t for t in g.initializer if t.name not in used and t.name not in inits]:
        g.initializer.remove(t)  # a constant this graph has no use for (a kind of input it lacks)
    if not any(o.domain == MS_DOMAIN for o in m.opset_import):
        m.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    for o in m.opset_import:  # blocked QuantizeLinear is opset 21; an exported encoder's ops mean the same there
        if o.domain in ("", "ai.onnx") and o.version < 21:
            o.version = 21
    onnx.save(m, str(dst), save_as_external_data=external, location=Path(dst).name + ".data" if external else None)


# ---- the lookup tables ------------------------------------------------------------------------------------
def table_storage(
    name: str,
    rows: int,
    hidden: int,
    tables: str = "int8",
    rare_from: int | None = None,
    min_elements: int = MIN_TABLE_ELEMENTS,
) -> str:
    """How `compact_lookup_tables` stores a (rows x hidden) fp32 lookup table named `name`: "fp32" (too small
    to bother), "fp16", "int8" (a scale per row) or "mixed" (a word-embedding table whose rows from
    `rare_from` on are a trimmed vocabulary's rare tokens, at 4 bits)."""
    if rows * hidden < min_elements:
        return "fp32"
    if tables == "fp16":
        return "fp16"
    if rare_from is not None and "word_embeddings" in name and 0 < rare_from < rows:
        return "mixed"
    return "int8"


def table_bytes(storage: str, rows: int, hidden: int, rare_from: int | None = None) -> int:
    """Bytes of a (rows x hidden) lookup table stored as `table_storage` said (the few index constants of a
    mixed lookup left out)."""
    int8_row = hidden + 2  # INT8 values and an fp16 scale
    if storage == "fp32":
        return rows * hidden * 4
    if storage == "fp16":
        return rows * hidden * 2
    if storage == "int8" or rare_from is None or hidden % 2:  # an odd width: lookup_mixed keeps 8 bits
        return rows * int8_row
    group = RARE_GROUP if hidden % RARE_GROUP == 0 else hidden
    return rare_from * int8_row + (rows - rare_from) * (hidden // 2 + 2 * 2 * (hidden // group))


def compact_lookup_tables(
    src: Path,
    dst: Path,
    external: bool,
    tables: str = "int8",
    min_elements: int = MIN_TABLE_ELEMENTS,
    rare_from: int | None = None,
) -> None:
    """Store large fp32 lookup tables (a Gather's data) compactly and turn the looked-up rows back into fp32.

    "int8": the table as INT8 with one scale per row (symmetric: scale = max |row| / 127); the graph
    gathers the INT8 rows and their scales and multiplies. "fp16": the table as fp16, cast after the lookup.
    `rare_from` (int8 only; a trimmed vocabulary): the word-embedding rows from this id on are the rare
    tokens', stored at 4 bits with a scale and an offset per group of 32 values (see export/vocab.py).
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    if tables not in TABLE_KINDS:
        raise ConfigError(f"lookup tables: 'int8' or 'fp16', not {tables!r}")
    m = onnx.load(str(src))
    g = _GraphBuilder(m.graph)
    inits = {i.name: i for i in m.graph.initializer}
    nodes, mixed_done, word_kept_fp32 = [], False, False
    for n in m.graph.node:
        t = inits.get(n.input[0]) if n.op_type == "Gather" and n.input else None
        if t is None or t.data_type != TensorProto.FLOAT or len(t.dims) != 2:
            nodes.append(n)
            continue
        storage = table_storage(t.name, int(t.dims[0]), int(t.dims[1]), tables, rare_from, min_elements)
        if storage == "fp32":
            word_kept_fp32 |= "word_embeddings" in t.name  # a trimmed vocabulary this small has no rows to compact
            nodes.append(n)
            continue
        table = numpy_helper.to_array(t).astype(np.float32)
        ids, out = n.input[1], n.output[0]
        m.graph.initializer.remove(t)
        if storage == "fp16":
            nodes += g.lookup_fp16(table, t.name, ids, out)
        elif storage == "mixed" and rare_from is not None:
            nodes += g.lookup_mixed(table, t.name, ids, out, rare_from)
            mixed_done = True
        else:
            nodes += g.lookup_int8(table, t.name, ids, out)
    if rare_from is not None and tables == "int8" and not (mixed_done or word_kept_fp32) and rare_from < _word_rows(m):
        raise InternalError("the INT8 export found no word-embedding table to store the rare rows of: please report it")
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]  # as onnx._scrub_onnx: the quantizer's shape annotations would let SkipLayerNorm fuse
    onnx.save(m, str(dst), save_as_external_data=external, location=Path(dst).name + ".data" if external else None)


def _word_rows(m) -> int:
    from onnx import numpy_helper

    for i in m.graph.initializer:
        if "word_embeddings" in i.name:
            return int(numpy_helper.to_array(i).shape[0])
    return 0


class _GraphBuilder:
    """Nodes and initializers for the compact lookups (unique names under the table's name)."""

    def __init__(self, graph):
        self.graph = graph

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    @staticmethod
    def node(op: str, inputs: list[str], output: str, **attrs):
        from onnx import helper

        return helper.make_node(op, inputs, [output], name=output + "_" + op, **attrs)

    def lookup_fp16(self, table: np.ndarray, name: str, ids: str, out: str) -> list:
        from onnx import TensorProto

        self.const(name, table.astype(np.float16))
        return [
            self.node("Gather", [name, ids], out + "_fp16", axis=0),
            self.node("Cast", [out + "_fp16"], out, to=TensorProto.FLOAT),
        ]

    def _int8_rows(self, table: np.ndarray, name: str, ids: str, out: str) -> list:
        from onnx import TensorProto

        scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        self.const(name, np.clip(np.rint(table / scale), -127, 127).astype(np.int8))
        self.const(name + "_row_scale", scale.astype(np.float16))
        return [
            self.node("Gather", [name, ids], out + "_q", axis=0),
            self.node("Cast", [out + "_q"], out + "_qf", to=TensorProto.FLOAT),
            self.node("Gather", [name + "_row_scale", ids], out + "_s16", axis=0),
            self.node("Cast", [out + "_s16"], out + "_s", to=TensorProto.FLOAT),
            self.node("Mul", [out + "_qf", out + "_s"], out),
        ]

    def lookup_int8(self, table: np.ndarray, name: str, ids: str, out: str) -> list:
        return self._int8_rows(table, name, ids, out)

    def lookup_mixed(self, table: np.ndarray, name: str, ids: str, out: str, rare_from: int) -> list:
        """Rows below `rare_from` at 8 bits, the others at 4 bits (two per byte, an fp16 scale and offset per
        group of 32 values); each id takes its row from the table it falls in."""
        from onnx import TensorProto

        rows, hidden = table.shape
        group = RARE_GROUP if hidden % RARE_GROUP == 0 else hidden
        if hidden % 2:
            return self._int8_rows(table, name, ids, out)
        c = lambda suffix, v: self.const(f"{name}_{suffix}", v)  # noqa: E731
        n8 = c("rare_from", np.array(rare_from, dtype=np.int64))
        last8 = c("last_frequent", np.array(rare_from - 1, dtype=np.int64))
        zero = c("zero", np.array(0, dtype=np.int64))
        sixteen = c("sixteen", np.array(16, dtype=np.int32))
        minus1 = c("minus1", np.array([-1], dtype=np.int64))
        groups = c("groups", np.array([hidden // group, group], dtype=np.int64))
        width = c("hidden", np.array([hidden], dtype=np.int64))

        rare = table[rare_from:].reshape(rows - rare_from, hidden // group, group)
        lo, hi = rare.min(-1, keepdims=True), rare.max(-1, keepdims=True)
        scale = (hi - lo) / 15.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint((rare - lo) / scale), 0, 15).astype(np.uint8).reshape(rows - rare_from, hidden)
        c("q4", (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8))
        c("q4_scale", scale.astype(np.float16))
        c("q4_offset", lo.astype(np.float16))
        n = self.node
        i4 = f"{name}_i4"
        nodes = self._int8_rows(table[:rare_from], name, out + "_i8", out + "_r8")
        nodes[:0] = [
            n("Min", [ids, last8], out + "_i8"),
            n("Sub", [ids, n8], out + "_i4raw"),
            n("Max", [out + "_i4raw", zero], i4),
        ]
        nodes += [
            n("Gather", [f"{name}_q4", i4], out + "_p", axis=0),  # (..., hidden/2) bytes
            n("Cast", [out + "_p"], out + "_pi", to=TensorProto.INT32),
            n("Mod", [out + "_pi", sixteen], out + "_lo"),
            n("Div", [out + "_pi", sixteen], out + "_hi"),
            n("Unsqueeze", [out + "_lo", minus1], out + "_lo1"),
            n("Unsqueeze", [out + "_hi", minus1], out + "_hi1"),
            n("Concat", [out + "_lo1", out + "_hi1"], out + "_pairs", axis=-1),  # (..., hidden/2, 2): in order
            n("Shape", [ids], out + "_ids_shape"),
            n("Concat", [out + "_ids_shape", groups], out + "_gshape", axis=0),
            n("Reshape", [out + "_pairs", out + "_gshape"], out + "_g"),  # (..., groups, 32)
            n("Cast", [out + "_g"], out + "_gf", to=TensorProto.FLOAT),
            n("Gather", [f"{name}_q4_scale", i4], out + "_gs16", axis=0),
            n("Cast", [out + "_gs16"], out + "_gs", to=TensorProto.FLOAT),
            n("Gather", [f"{name}_q4_offset", i4], out + "_go16", axis=0),
            n("Cast", [out + "_go16"], out + "_go", to=TensorProto.FLOAT),
            n("Mul", [out + "_gf", out + "_gs"], out + "_gm"),
            n("Add", [out + "_gm", out + "_go"], out + "_ga"),
            n("Concat", [out + "_ids_shape", width], out + "_hshape", axis=0),
            n("Reshape", [out + "_ga", out + "_hshape"], out + "_r4"),
            n("Less", [ids, n8], out + "_frequent"),
            n("Unsqueeze", [out + "_frequent", minus1], out + "_frequent1"),
            n("Where", [out + "_frequent1", out + "_r8", out + "_r4"], out),
        ]
        return nodes
