"""Before Qt starts: can its window-system plugin load? Qt itself aborts (exit 134) with a hint that names
xcb-cursor0 whatever is really missing; this check names the missing libraries and the packages that hold them.
No Qt import here: it must run before anything loads Qt."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

# shared library -> the Debian/Ubuntu package that holds it (what Qt 6's xcb plugin and Qt GUI link against)
DEBIAN_PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libXext.so.6": "libxext6",
    "libXrender.so.1": "libxrender1",
    "libXi.so.6": "libxi6",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)
_DLOPEN = re.compile(r"(\S+\.so[.\d]*): cannot open shared object file")


def xcb_plugin() -> Path | None:
    spec = find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def missing_libraries(path: Path) -> list[str]:
    """Shared libraries `path` needs that the loader cannot find: all of them from ldd, else the first from dlopen."""
    ldd = shutil.which("ldd")
    if ldd:
        try:
            out = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None:
            return list(dict.fromkeys(_NOT_FOUND.findall(out)))
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        m = _DLOPEN.search(str(exc))
        return [m.group(1)] if m else []
    return []


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def install_hint(libraries: list[str]) -> str:
    """'sudo apt-get install pkg...' on Debian/Ubuntu (without sudo for root, who may not have it: a container);
    elsewhere the library names to look up."""
    known = [DEBIAN_PACKAGES[lib] for lib in libraries if lib in DEBIAN_PACKAGES]
    if known and len(known) == len(libraries) and (Path("/etc/debian_version").exists() or shutil.which("apt-get")):
        return ("" if is_root() else "sudo ") + "apt-get install " + " ".join(dict.fromkeys(known))
    return "install the packages that provide " + ", ".join(libraries) + " (docs/install.md: Linux system packages)"


def _platform() -> str:
    # QT_QPA_PLATFORM may list fallbacks ("wayland;xcb") and options ("xcb:option"); the first one is tried first
    return os.environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()


def platform_problem() -> str | None:
    """One line saying why Qt's xcb platform plugin would fail to start here, or None (also off Linux, and for
    any other platform: offscreen, wayland...)."""
    if not sys.platform.startswith("linux"):
        return None
    platform = _platform()
    if platform and platform != "xcb":
        return None
    if not platform and os.environ.get("WAYLAND_DISPLAY"):
        return None  # a Wayland session: Qt may use its wayland plugin, and xcb is not needed
    plugin = xcb_plugin()
    if plugin is None:
        return None  # not a PySide6 wheel layout we know: let Qt speak for itself
    missing = missing_libraries(plugin)
    if missing:
        return (
            f"the studio's window system plugin (Qt xcb) cannot load: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing: {install_hint(missing)}"
        )
    if not os.environ.get("DISPLAY"):
        return (
            "no X display to open the studio on ($DISPLAY is not set): start it from a desktop session or "
            "over `ssh -X`; to only save a picture, use QT_QPA_PLATFORM=offscreen with --screenshot"
        )
    return None


def import_problem(exc: ImportError) -> str | None:
    """A Qt module that failed to import because a system library is missing: one line naming its package."""
    m = _DLOPEN.search(str(exc))
    if not m:
        return None
    return f"the studio cannot load Qt: {m.group(1)} is missing: {install_hint([m.group(1)])}"
