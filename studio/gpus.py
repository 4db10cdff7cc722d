"""The NVIDIA GPUs a training started from the studio may use, found without importing torch (the studio never does)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def gpu_count() -> int:
    """NVIDIA GPUs a training started from here may use, without loading torch: none with a CPU-only torch build;
    the driver's GPUs (Linux: /proc/driver/nvidia; WSL2 and others: `nvidia-smi -L`), as CUDA_VISIBLE_DEVICES
    leaves them."""
    if not _torch_has_cuda():
        return 0
    gpus, migs = _driver_gpus()
    return visible_gpus(gpus, migs, os.environ.get("CUDA_VISIBLE_DEVICES"))


def run_processes(device_setting: str, chosen: int) -> int:
    """Processes for a run: one per GPU chosen on the Train page, but one where the project trains on the CPU or
    on one named GPU (train.device "cuda:1": under torchrun every process would want its own)."""
    return chosen if device_setting in ("auto", "cuda") else 1


def _torch_has_cuda(version_file: Path | None = None) -> bool:
    """Whether the installed torch is a CUDA build, read from torch/version.py (`cuda = None` in a CPU-only build)
    rather than by importing torch (the studio never does)."""
    if version_file is None:
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return False
        version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("cuda"):
            value = line.split("=", 1)[-1].strip()
            return value not in ("None", "")
    return False


def _driver_gpus() -> tuple[list[str], list[str]]:
    """The UUIDs of the machine's NVIDIA GPUs ("" where unknown) and of their MIG instances."""
    folder = "/proc/driver/nvidia/gpus"
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        entries = None
    if entries:
        gpus = []
        for bus in entries:
            try:
                info = Path(folder, bus, "information").read_text(encoding="utf-8", errors="replace")
            except OSError:
                info = ""
            uuid_line = [ln for ln in info.splitlines() if ln.startswith("GPU UUID:")]
            gpus.append(uuid_line[0].split(":", 1)[1].strip() if uuid_line else "")
        return gpus, []
    # WSL2 (its driver lives in Windows) or another system without /proc entries: ask the driver's own tool
    listing = _nvidia_smi_list()
    gpus, migs = [], []
    for line in (listing or "").splitlines():
        uuid_part = line.rsplit("(UUID:", 1)[-1].strip(" )") if "(UUID:" in line else ""
        if line.startswith("GPU "):
            gpus.append(uuid_part)
        elif line.strip().startswith("MIG "):
            migs.append(uuid_part)
    return gpus, migs


def _nvidia_smi_list() -> str | None:
    import shutil

    tool = shutil.which("nvidia-smi") or next(
        (p for p in ("/usr/lib/wsl/lib/nvidia-smi",) if os.access(p, os.X_OK)), None
    )
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def visible_gpus(gpus: list[str], migs: list[str], visible: str | None) -> int:
    """How many devices CUDA shows a process, as it reads CUDA_VISIBLE_DEVICES: unset, every GPU; "" or "-1", none;
    else indices or (prefixes of) GPU-/MIG- UUIDs, in order, up to the first entry that names no device. A MIG
    instance is a device of its own, and CUDA lets a process use only one: MIG means one process."""
    if visible is None:
        return min(len(gpus), 1) if migs else len(gpus)
    seen: set[str] = set()
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit() and int(entry) < len(gpus):
            seen.add(f"#{int(entry)}")
        elif entry.startswith("GPU-") and any(g.startswith(entry) for g in gpus if g):
            seen.add(next(g for g in gpus if g.startswith(entry)))
        elif entry.startswith("MIG-"):
            return 1  # one MIG instance per process
        else:
            break  # "-1", an index past the last GPU, an unknown UUID: CUDA stops reading here
    return len(seen)
