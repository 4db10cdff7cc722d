"""Typed errors: the ones a user can cause carry a one-line message naming the thing and the fix."""


class UserError(Exception):
    """A mistake the user can fix (bad file, bad column, unsupported model...).

    The message is one line that names the file/line/field and says what to do.
    Front ends show it as-is: a dialog in the studio, a stderr line + exit 2 in the CLI.
    """


class DataError(UserError):
    """Bad or missing training/evaluation data."""


class ModelError(UserError):
    """A model that cannot be loaded or is not a supported architecture."""


class ProjectError(UserError):
    """A project folder that is missing, incomplete or corrupted."""


class ConfigError(UserError):
    """An invalid setting (hyper-parameter, multiplier list, stage name...)."""


class Cancelled(Exception):
    """Raised inside a job when its stop token was set; the project stays resumable."""


class InternalError(RuntimeError):
    """A check of the engine's own work failed (rewiring changed the logits, an fp32 export disagrees with
    PyTorch): a bug to report, never the user's mistake, so it keeps its traceback everywhere."""


class DiskFull(UserError):
    """The disk filled while writing: the previous version of the file is kept, and nothing half-written stays."""


def disk_full(exc: BaseException, what: str) -> DiskFull | None:
    """A DiskFull naming `what` when `exc` means the disk or the quota is full (an OSError with ENOSPC or
    EDQUOT, or a library's error that wraps one, as safetensors' does), else None."""
    import errno

    full = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    seen, e = 0, exc
    while e is not None and seen < 5:
        if isinstance(e, OSError) and e.errno in full:
            break
        text = str(e)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            break
        nxt = e.__cause__ or e.__context__
        if nxt is None:
            return None
        e, seen = nxt, seen + 1
    else:
        return None
    return DiskFull(
        f"{what}: the disk is full, so it was not written (the previous version, if any, is kept): "
        "free some space and run the same command again"
    )


class OutOfMemory(UserError):
    """The GPU (or the machine) ran out of memory: the settings that size a batch say what to lower."""


_OOM_TEXT = ("CUDA out of memory", "out of memory", "DefaultCPUAllocator: can't allocate memory")


def out_of_memory(exc: BaseException, cfg) -> OutOfMemory | None:
    """An OutOfMemory naming what to lower when `exc` is torch's out-of-memory error (CUDA, or the CPU
    allocator's), else None. `cfg`: the project's config. The error stays one line (torch's has several)."""
    name = type(exc).__name__
    text = str(exc)
    if name != "OutOfMemoryError" and not (isinstance(exc, (RuntimeError, MemoryError)) and _is_oom_text(text)):
        return None
    where = "the GPU" if "CUDA" in text or name == "OutOfMemoryError" else "this machine"
    first = text.strip().splitlines()[0][:160] if text.strip() else name
    t = cfg.train
    return OutOfMemory(
        f"{where} ran out of memory ({first.rstrip('.')}): lower train.batch_size ({t.batch_size}) or "
        f"train.max_seq_length ({t.max_seq_length}) for training, train.eval_batch_size ({t.eval_batch_size}) for "
        "evaluation, in the project's hyper-parameters (project.json), then run again"
    )


def _is_oom_text(text: str) -> bool:
    return any(s in text for s in _OOM_TEXT)
