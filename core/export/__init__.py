"""Export a sub-network to a device format, verified against PyTorch: one module per concern (import those).

job (the export job), formats (the one writer), logits (what is exported), onnx, quantize (INT8), runtimes
(OpenVINO, ExecuTorch, Core ML, TorchScript, HF folder), runners (running a written model back), verify,
readme, targets (formats and presets; torch-free, as this package's __init__ must stay), vocab (trimming).
"""
