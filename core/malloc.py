"""tcmalloc for training processes on Linux, when the machine has it.

A training step on a CPU makes tens of thousands of small tensors; glibc's malloc spent 11 % of the main thread
of a fresh depth-stage process here, and 19 % once earlier stages had fragmented its heap
(bench/results/stage_age.md). gperftools' tcmalloc keeps per-size free lists and is what PyTorch's and Intel's
CPU performance guides preload. A process can only get it at its start (LD_PRELOAD), so `dynastudio run`
re-executes itself with it, once, before anything else happens: the same pid, the same arguments; the stage
processes it starts inherit it. Measured in bench/malloc_ab.py.

DYNASTUDIO_MALLOC: `auto` (the default: tcmalloc when installed, else glibc's), `system` (glibc's malloc), or the
path of a malloc library to preload (jemalloc, say).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ConfigError

ENV = "DYNASTUDIO_MALLOC"
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")  # Debian/Ubuntu: libtcmalloc-minimal4; Fedora: gperftools-libs
SYSTEM = ("system", "glibc", "off", "none")
# tcmalloc reports every allocation above this size on stderr (default 1 GiB): a large vocabulary's gradient is one
LARGE_ALLOC_REPORT = "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"


def library_dirs() -> list[Path]:
    arch = platform.machine()
    dirs = [f"/usr/lib/{arch}-linux-gnu", f"/lib/{arch}-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]
    return [Path(sys.prefix) / "lib"] + [Path(d) for d in dirs]  # a conda env's gperftools first


def find(environ: Mapping[str, str] = os.environ, dirs: Sequence[Path] | None = None) -> str | None:
    """The malloc library this machine's training processes should preload, or None for glibc's."""
    setting = environ.get(ENV, "auto").strip()
    if setting.lower() in SYSTEM:
        return None
    if setting and setting.lower() != "auto":
        if not Path(setting).is_file():
            raise ConfigError(
                f"{ENV}={setting}: no such file; set it to the path of a malloc library (such as "
                f"libtcmalloc_minimal.so.4), to 'auto' or to 'system'"
            )
        return str(Path(setting).resolve())
    if not sys.platform.startswith("linux"):
        return None
    for d in library_dirs() if dirs is None else dirs:
        for name in NAMES:
            if (d / name).is_file():
                return str(d / name)
    return None


def preloaded(lib: str, environ: Mapping[str, str] = os.environ) -> bool:
    names = [Path(p).name for p in environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    return Path(lib).name in names


def preload_env(environ: Mapping[str, str] = os.environ, lib: str | None = None) -> dict[str, str]:
    """`environ` with the malloc library (`find`'s when None) preloaded: for a process started with it."""
    env = dict(environ)
    lib = lib or find(environ)
    if lib is None or preloaded(lib, env):
        return env
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env.setdefault(LARGE_ALLOC_REPORT, str(1 << 40))
    return env


def reexec(command: Sequence[str]) -> None:
    """Replace this process with `command` run with the malloc library preloaded, unless it has it already (or
    none is installed, or this is not Linux). Call it first thing: nothing done before it survives."""
    lib = find()
    if lib is None or preloaded(lib) or os.environ.get(f"{ENV}_TRIED") == lib:
        return
    env = preload_env(os.environ, lib)
    env[f"{ENV}_TRIED"] = lib  # once: a library the loader refuses must not loop
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], list(command), env)


def active() -> str | None:
    """The preloaded malloc library this process runs with (as found in its own memory map), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        name = Path(line.split()[-1]).name if line.split() else ""
        if any(kind in name for kind in ("tcmalloc", "jemalloc", "mimalloc")):
            return line.split()[-1]
    return None
