"""Where training runs: mixed precision (autocast, gradient scaling) and the torch.distributed process group.

A process started by `torchrun` finds RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR in its environment;
`init_distributed` joins the group from them. Everything here answers sensibly in a plain single
process (world 1, rank 0), which is how the studio and a bare `dynastudio run` train.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .config import PRECISIONS
from .errors import Cancelled, ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---- the process group --------------------------------------------------------------------------
def launched_distributed() -> bool:
    """True in a process that torchrun (or another torch.distributed launcher) started."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """The process that writes the project: rank 0, or the only one."""
    return rank() == 0


def barrier() -> None:
    if initialized():
        dist.barrier()


def init_distributed(device_setting: str) -> str:
    """Join the process group torchrun describes: NCCL on GPUs, gloo on CPUs. Returns the backend."""
    check_cuda_setting(device_setting)
    use_cuda = device_setting in ("auto", "cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} GPU(s) here: "
                f"start at most {torch.cuda.device_count()} processes per node (--nproc_per_node)"
            )
        torch.cuda.set_device(local_rank())
    # long stages run on rank 0 alone (writing a checkpoint, evaluating) while the others wait
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return backend


def check_cuda_setting(setting: str) -> None:
    """A train.device that names CUDA needs a GPU; a numbered one must exist, and under torchrun none is numbered:
    each process uses its own GPU, cuda:LOCAL_RANK, the one NCCL uses."""
    if not setting.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device is '{setting}' but this machine has no CUDA GPU: set it to 'auto' or 'cpu'")
    index = torch.device(setting).index
    if index is None:
        return
    if launched_distributed() or initialized():
        raise ConfigError(
            f"train.device is '{setting}', but under torchrun each process uses its own GPU (cuda:LOCAL_RANK): "
            "set it to 'cuda' or 'auto' (CUDA_VISIBLE_DEVICES chooses the GPUs torchrun uses)"
        )
    n = torch.cuda.device_count()
    if index >= n:
        raise ConfigError(
            f"train.device is '{setting}' but this machine has {n} GPU(s) (cuda:0 to cuda:{n - 1}): pick one of them"
        )


def backend() -> str | None:
    return dist.get_backend() if initialized() else None


def shutdown_distributed() -> None:
    if initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (a no-op in one process); works for a tensor on any device."""
    if initialized():
        moved = t.to(_comm_device())
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        if moved is not t:
            t.copy_(moved)
    return t


def any_process(flag: bool) -> bool:
    """True when the flag is set in any process: every rank stops at the same step, or none does."""
    if not initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def release_memory() -> bool:
    """Between two stages of one run: collect the last stage's garbage and give its freed heap back (glibc's
    malloc_trim), so the next stage starts from a compact heap. In one process, a stage that followed others was
    measured slower than the same stage in a fresh process, with more of its time in glibc's malloc
    (bench/results/stage_age.md). True when the heap was trimmed (Linux with glibc)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def check_stop(stop) -> None:
    """`stop.check()` agreed by every process (a stop asked in one stops all, at the same point)."""
    if any_process(stop.is_set()):
        raise Cancelled("stopped by request")


def all_gather_objects(obj) -> list:
    if not initialized():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def _comm_device() -> torch.device:
    # NCCL moves CUDA tensors only (on this process's GPU); gloo moves CPU tensors
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---- precision ----------------------------------------------------------------------------------
def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AVX512-BF16 (AMD Zen 4, Intel Cooper Lake and later), AMX-BF16
    (Intel Sapphire Rapids and later) or Arm's BF16 extension (Neoverse V1/N2, Graviton 3 and later). Elsewhere
    bf16 autocast is emulated and slower than fp32. Read from torch's cpuinfo query (torch.cpu.get_capabilities);
    on Arm Linux from the kernel's feature list, which that query does not cover."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # an older torch: no query, no claim
        caps = {}
    if caps.get("avx512_bf16") or caps.get("amx_bf16"):
        return True
    if platform.machine().lower() in ("aarch64", "arm64"):
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return any(line.startswith("Features") and " bf16" in f"{line} " for line in text.splitlines())
    return False


def resolve_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 on a CUDA GPU that has it, fp16 (with loss scaling) on older GPUs; on a CPU bf16 autocast where
    the CPU computes bf16 natively (see cpu_native_bf16; measured in bench/bf16_cpu.py), fp32 elsewhere. Weights,
    optimizer state and losses stay fp32 in every case; evaluation runs in fp32."""
    device = torch.device(device)
    if setting not in PRECISIONS:
        raise ConfigError(f"train.precision: '{setting}' is not one of {', '.join(PRECISIONS)}")
    if setting == "auto":
        if device.type != "cuda":
            return "bf16" if cpu_native_bf16() else "fp32"
        return "bf16" if cuda_native_bf16(device) else "fp16"
    if setting == "fp16" and device.type != "cuda":
        raise ConfigError(
            "train.precision fp16 needs a CUDA GPU (loss scaling is a GPU technique): "
            "use fp32 or bf16 on a CPU, or auto"
        )
    if setting == "bf16" and device.type == "cuda" and not cuda_native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ConfigError(
            f"train.precision bf16: this GPU ({torch.cuda.get_device_name(device)}, compute capability "
            f"{major}.{minor}) has no native bfloat16 (Ampere, 8.0, and later have it): torch would emulate it, "
            "several times slower than fp16: use auto (fp16 with loss scaling here), fp16 or fp32"
        )
    return setting


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether this GPU (the one asked about, not the current one) computes bf16 in hardware: compute capability
    8.0 (Ampere) and later. torch.cuda.is_bf16_supported() also says yes where bf16 is only emulated (V100, T4)."""
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def autocast(device: torch.device, precision: str):
    """Autocast for forward passes (student and teacher alike); fp32 runs plain."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def make_scaler(device: torch.device, precision: str):
    """A gradient scaler for fp16 (its small range underflows gradients); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def setup_device_math(device: torch.device) -> None:
    """TF32 tensor-core matmuls for the fp32 parts on NVIDIA GPUs (Ampere and later)."""
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


# ---- random state ---------------------------------------------------------------------------------
@dataclass
class RngState:
    cpu: torch.Tensor
    cuda: torch.Tensor | None


def get_rng(device: torch.device) -> RngState:
    cuda = torch.cuda.get_rng_state(torch.device(device)) if torch.device(device).type == "cuda" else None
    return RngState(torch.get_rng_state(), cuda)


def set_rng(state: RngState, device: torch.device) -> None:
    torch.set_rng_state(state.cpu)
    if state.cuda is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state.cuda, torch.device(device))
