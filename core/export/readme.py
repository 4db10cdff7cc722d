"""README.md of an export folder: what the model is, how it was checked, and how to run it on its device."""

from __future__ import annotations

import json

from ..slim import SlimModel
from .targets import CONFIG_FILE, FORMATS

# a classification head this wide is listed by its first names only; the config file beside the model has them all
MAX_LISTED_LABELS = 40


def _folder_lines(folder_name: str) -> list[str]:
    """The snippet's lines that find the export folder: a path relative to the folder above it fails from inside it,
    where transformers then takes the name for a hub model and goes to the network; "." fails from the parent."""
    name = json.dumps(folder_name, ensure_ascii=False)  # a valid Python string literal, whatever the name holds
    return [
        f"folder = {name}  # this folder: run this from inside it or from the folder above it",
        "if not os.path.isdir(folder):",
        '    folder = "."',
    ]


def _size(n: int) -> str:
    """Bytes as people read them: a small OpenVINO xml is 104.2 kB, not 0.1 MB."""
    if n < 1e6:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _model_files(v: dict) -> str:
    """The model's file and each side file that holds its weights (OpenVINO's .bin, ONNX external data), each with
    its own size: the model file alone can be a few kB of graph beside megabytes of weights."""
    main = v["model_file"]
    files = v.get("files") or {}
    side = [
        f
        for f in (main.rsplit(".", 1)[0] + ".bin" if main.endswith(".xml") else None, main + ".data")
        if f and f in files
    ]
    if main not in files:  # a record without per-file sizes: the model's total is all there is
        return f"- Model file: `{main}` ({v['size_mb']:.1f} MB)."
    if not side:
        return f"- Model file: `{main}` ({_size(files[main])})."
    what = "network" if main.endswith(".xml") else "graph"
    parts = [f"`{main}` ({_size(files[main])}, the {what})"] + [f"`{f}` ({_size(files[f])}, the weights)" for f in side]
    total = files[main] + sum(files[f] for f in side)
    return f"- Model files: {' and '.join(parts)}; {_size(total)} in all, keep them together."


def _labels(config) -> str:
    """What the output's columns mean, in words: "Labels: 0: 0, 1: 1" told a user nothing."""
    n = config.num_labels
    if n == 1 or config.problem_type == "regression":
        return "- Output: one score per text (regression), `logits[:, 0]`."
    id2label = {int(k): str(name) for k, name in (config.id2label or {}).items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(n)]
    scores = "`logits[:, i]` scores class i"
    if names == [str(i) for i in range(n)]:
        named = " and ".join(names) if n <= 3 else f"0 to {n - 1}"
        return f"- Labels: {n} classes, named {named} in the training data (the same as their indices); {scores}."
    if names == [f"LABEL_{i}" for i in range(n)]:
        called = " and ".join(f"`{x}`" for x in names) if n <= 3 else f"`LABEL_0` to `LABEL_{n - 1}`"
        return f"- Labels: {n} classes with no names (the model calls them {called}); {scores}."
    pairs = ", ".join(f"{i} -> `{x}`" for i, x in enumerate(names[:MAX_LISTED_LABELS]))
    more = f", ... (all {n} in the config file beside the model)" if n > MAX_LISTED_LABELS else ""
    return f"- Labels: {n} classes; {scores}, index -> name in the training data: {pairs}{more}."


def _ort_python(v: dict, folder_name: str, feed_keys: str, provider_note: str = "") -> list[str]:
    """The README's Python snippet that runs an ONNX or .ort file with onnxruntime and the folder's tokenizer."""
    return [
        "```python",
        "import os",
        "import onnxruntime as ort",
        "from transformers import AutoTokenizer",
        "",
        *_folder_lines(folder_name),
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        f'session = ort.InferenceSession(f"{{folder}}/{v["model_file"]}", providers=["CPUExecutionProvider"]){provider_note}',
        'enc = tokenizer(["a great movie", "a dull plot"], padding=True, truncation=True, return_tensors="np")',
        f"logits = session.run(None, {{k: enc[k] for k in ({feed_keys},)}})[0]",
        "print(logits.argmax(-1))",
        "```",
    ]


def readme(v: dict, slim: SlimModel, folder_name: str) -> str:
    """The README of an export folder from its verification record `v` (what verification.json holds)."""
    s = v["subnet"]
    fmt = v["format"]
    feed_keys = ", ".join(f'"{k}"' for k in v["inputs"])
    name = f"{s['label']} (searched)" if "label" in s else f"w{s['width_mult']:g} d{s['depth_mult']:g}"
    lines = [
        f"# DynaBERT sub-network {name} ({fmt})",
        "",
    ]
    if not v.get("passed", True):
        lines += [f"**This export FAILED its check and should not be deployed:** {v.get('failure')}", ""]
    lines += [
        f"{FORMATS[fmt]}.",
        "",
        f"- Shape: {s['layers']} layers (kept {s['kept_layers']} of the original, rule `{s['depth_rule']}`), "
        f"{s['heads']} attention heads and {s['neurons']} FFN neurons per layer, hidden size {slim.config.hidden_size}; "
        f"{s['params']:,} parameters.",
        _model_files(v),
        f"- Beside the model: the tokenizer files and `{'config.json' if fmt == 'hf' else CONFIG_FILE}` "
        "(shape, labels).",
        f"- Inputs: {', '.join(v['inputs'])} (int64, shape batch x sequence); "
        f"output: `logits` (float32, batch x {slim.config.num_labels}).",
        _labels(slim.config),
        (
            f"- Verified against PyTorch: max abs difference {v['max_abs_diff']:.2e} on {v['probe']['source']} inputs "
            f"of shapes {v['probe']['shapes']}"
            if v["max_abs_diff"] is not None
            else "- **Not verified on this machine** (no Core ML runtime on Linux): the saved package's inputs, output and "
            "shape ranges were read back and checked"
        )
        + (
            f"; dev-set prediction agreement {100 * v['dev']['agreement']:.2f}% over {v['dev']['examples']} examples"
            if v.get("dev") and v["dev"].get("agreement") is not None
            else ""
        )
        + (
            f" ({v['dev']['metric']}: {v['dev']['exported_score']:.4f} exported, {v['dev']['pytorch_score']:.4f} PyTorch)"
            if v.get("dev") and v["dev"].get("exported_score") is not None
            else ""
        )
        + " (see `verification.json`).",
        "",
        "## Run it",
        "",
    ]
    if q := v.get("quantization"):
        e, speed, method = q.get("emulation"), q.get("speed"), q.get("method", "per-token")
        how = {
            "per-token": "; activations quantized with a range per token",
            "dynamic": "; activations quantized with one range per tensor (dynamic); the dev rows ran one at a time, "
            "as a device runs them",
            "static": "; activations quantized with fixed ranges calibrated on train rows (NNCF)",
        }
        lines[-3:-3] = [
            "- INT8 weights "
            + (
                "from the int8-aware stage (trained as this file computes), checked against the fp32 model"
                if q["path"] == "int8-aware"
                else "quantized from the fp32 model after training (no int8-aware weights)"
            )
            + how.get(method, f" by {method}, calibrated on {q.get('calibration', 'train rows')}")
            + (
                f"; this file and its emulation in PyTorch agree on {100 * e['agreement']:.2f}% "
                f"(largest logit difference {e['max_abs_diff']:.1e})"
                if e
                else ""
            )
            + "."
        ]
        if speed:
            lines[-3:-3] = [
                f"- On the machine that exported it, this file ran in {speed['int8_ms']:.2f} ms against "
                f"{speed['fp32_ms']:.2f} ms for the fp32 model ({speed['speedup']:.2f}x; {speed['setup']})."
            ]
    if voc := v.get("vocabulary"):
        lines[-3:-3] = [
            f"- Vocabulary trimmed to the task: {voc['kept_tokens']:,} of {voc['original_tokens']:,} tokens kept "
            f"({voc['from']}); model file {_size(voc['size_before_mb'] * 1e6)} before, "
            f"{_size(voc['size_after_mb'] * 1e6)} after. "
            f"Words outside it become [UNK] or smaller pieces: on dev rows held out from a vocabulary built the same way "
            f"({voc['heldout']['rows_with_unseen_tokens']} of {voc['heldout']['rows']} with unseen words) the predictions "
            f"agreed with the untrimmed model on {100 * voc['heldout']['agreement']:.2f}%. Use this folder's tokenizer: "
            "the token ids differ from the original model's.",
        ]
    if fmt in ("ort", "ort-int8"):
        lines += [
            "ONNX Runtime Mobile loads `.ort` files: on Android the `com.microsoft.onnxruntime:onnxruntime-android` package, "
            "on iOS `onnxruntime-objc` (CocoaPods), elsewhere any onnxruntime (`pip install onnxruntime`). Tokenize on the "
            "device with the `tokenizer.json` beside it (e.g. the Hugging Face `tokenizers` bindings), then:",
            "",
            "```kotlin",
            "val env = OrtEnvironment.getEnvironment()",
            f'val session = env.createSession(assets.open("{v["model_file"]}").readBytes())',
            f"// {', '.join(v['inputs'])}: LongArray tensors of shape [batch, sequence]",
            "val logits = session.run(inputs)[0].value as Array<FloatArray>",
            "```",
            "",
            "Python check:",
            "",
            *_ort_python(v, folder_name, feed_keys),
        ]
    elif fmt in ("openvino", "openvino-int8"):
        lines += [
            "```bash",
            "pip install openvino transformers",
            "```",
            "",
            "```python",
            "import os",
            "import openvino as ov",
            "from transformers import AutoTokenizer",
            "",
            *_folder_lines(folder_name),
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'model = ov.Core().compile_model(f"{{folder}}/{v["model_file"]}", "CPU")',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="np")',
            f"logits = model({{k: enc[k] for k in ({feed_keys},)}})[0]",
            "print(logits.argmax(-1))",
            "```",
            "",
            "The weights are fp32 (`openvino_model.bin`). OpenVINO's CPU plugin computes in bf16 on CPUs that have it "
            '(AVX512-BF16, AMX) and in fp32 elsewhere; pass `{"INFERENCE_PRECISION_HINT": "f32"}` to '
            "`compile_model` for fp32 everywhere. `verification.json` has both checks: strict fp32, and the default "
            "precision's dev-set agreement."
            if fmt == "openvino"
            else "The weights are INT8 (`openvino_model.bin`). "
            + (
                "The file asks OpenVINO's CPU plugin to quantize each product's input on the fly, with a range per "
                "token (`DYNAMIC_QUANTIZATION_GROUP_SIZE` in the model's `runtime_options`; a `compile_model` "
                "setting of your own overrides it). A CPU where the plugin cannot do so runs INT8 weights only."
                if (v.get("quantization") or {}).get("method") == "per-token"
                else "NNCF fixed its activation ranges from train rows; OpenVINO runs its INT8 kernels."
            ),
        ]
    elif fmt == "executorch":
        lines += [
            "An ExecuTorch program lowered to the XNNPACK delegate (fp32; batch up to 64, sequence up to 512). "
            "On Android and iOS, link the ExecuTorch runtime with the XNNPACK backend and load `model.pte` with "
            "`Module`; tokenize with the `tokenizer.json` beside it. Inputs are int64.",
            "",
            "```python",
            "import os",
            "import torch",
            "from executorch.runtime import Runtime",
            "from transformers import AutoTokenizer",
            "",
            *_folder_lines(folder_name),
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'method = Runtime.get().load_program(f"{{folder}}/{v["model_file"]}").load_method("forward")',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="pt")',
            f"logits = method.execute([{', '.join(f'enc[{k!r}]' for k in v['inputs'])}])[0]",
            "print(logits.argmax(-1))",
            "```",
        ]
    elif fmt == "coreml":
        lines += [
            "A Core ML ML program (iOS 16 / macOS 13 or later; Core ML computes it in fp16 on the Neural Engine or GPU). "
            "Add `model.mlpackage` to an Xcode project, or load it in Python on a Mac:",
            "",
            "```python",
            "import os",
            "import coremltools as ct",
            "import numpy as np",
            "from transformers import AutoTokenizer",
            "",
            *_folder_lines(folder_name),
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'model = ct.models.MLModel(f"{{folder}}/{v["model_file"]}")',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="np")',
            f"out = model.predict({{k: enc[k].astype(np.int32) for k in ({feed_keys},)}})",
            'print(out["logits"].argmax(-1))',
            "```",
            "",
            "Inputs are int32 arrays of shape batch (1-64) x sequence (2-512).",
        ]
    elif fmt.startswith("onnx"):
        lines += [
            "```bash",
            "pip install onnxruntime transformers"
            + ("  # onnxruntime-gpu on a GPU server" if fmt == "onnx-fp16" else ""),
            "```",
            "",
            *_ort_python(v, folder_name, feed_keys, "  # or CUDAExecutionProvider" if fmt == "onnx-fp16" else ""),
        ]
        if fmt == "onnx-fp16":
            lines += [
                "",
                "Weights and activations are fp16, the `logits` output is cast to float32. fp16 is meant "
                "for GPUs; it runs on a CPU too, but slower than fp32.",
            ]
        if fmt == "onnx-int8":
            lines += [
                "",
                "The weight matrices are INT8 (one scale per output channel); each matrix's input is quantized to "
                "UINT8 on the fly, "
                + (
                    "with a range per token"
                    if v.get("quantization", {}).get("method", "per-token") == "per-token"
                    else "one range per tensor (onnxruntime dynamic quantization)"
                )
                + "; the embedding tables are INT8 with one scale per row. The file uses onnxruntime's own "
                "MatMulIntegerToFloat operator and opset 21, so it needs onnxruntime 1.19 or newer, not another "
                "ONNX runtime. "
                "Fast on x86 CPUs with AVX2/AVX-512 VNNI and on ARM64.",
            ]
    elif fmt == "torchscript":
        args = ", ".join(v["inputs"])
        lines += [
            "Python (needs only torch, plus a tokenizer):",
            "",
            "```python",
            "import os",
            "import torch",
            "from transformers import AutoTokenizer",
            "",
            *_folder_lines(folder_name),
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'model = torch.jit.load(f"{{folder}}/{v["model_file"]}").eval()',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="pt")',
            "with torch.no_grad():",
            f"    logits = model({', '.join(f'enc[{k!r}]' for k in v['inputs'])})",
            "print(logits.argmax(-1))",
            "```",
            "",
            "C++ (LibTorch):",
            "",
            "```cpp",
            "#include <torch/script.h>",
            f'auto module = torch::jit::load("{v["model_file"]}");',
            f"// {args}: int64 tensors of shape {{batch, sequence}} from the tokenizer (tokenizer.json)",
            f"auto logits = module.forward({{{args}}}).toTensor();",
            "```",
            "",
            "The model was traced with torch.jit.trace (checked at two different batch/sequence shapes).",
        ]
    else:  # hf
        lines += [
            "Needs torch and transformers (5.x) only, not DynaBERT Studio. The model class ships in this folder "
            "(`modeling_dynabert.py`, a copy of DynaBERT Studio's `core/slim.py`), hence `trust_remote_code=True` "
            "for the model and the tokenizer (the tokenizer reads config.json too):",
            "",
            "```python",
            "import os",
            "import torch",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            *_folder_lines(folder_name),
            "tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)",
            "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()",
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="pt")',
            "with torch.no_grad():",
            "    logits = model(**enc).logits",
            "print(logits.argmax(-1))",
            "```",
            "",
            "Or as a pipeline:",
            "",
            "```python",
            "import os",
            "from transformers import pipeline",
            "",
            *_folder_lines(folder_name),
            'classify = pipeline("text-classification", model=folder, trust_remote_code=True)',
            'print(classify(["a great movie", "a dull plot"]))',
            "```",
        ]
    lines += ["", f"Made by DynaBERT Studio from `{v['source']['project']}` (model `{v['source']['model']}`)."]
    return "\n".join(lines) + "\n"
