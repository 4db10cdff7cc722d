"""`dynastudio gui` on a plain Linux box: the missing libraries of Qt's xcb plugin are named with their packages."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from dynastudio.studio import platform_check as pc

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f1)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
"""


def test_ldd_output_gives_every_missing_library_once(monkeypatch, tmp_path):
    monkeypatch.setattr(pc.shutil, "which", lambda name: "/usr/bin/ldd" if name == "ldd" else None)
    monkeypatch.setattr(pc.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a[0], 0, LDD_OUTPUT, ""))
    assert pc.missing_libraries(tmp_path / "libqxcb.so") == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]


@pytest.mark.skipif(not sys.platform.startswith("linux") or pc.xcb_plugin() is None, reason="Linux PySide6 wheels only")
def test_the_real_plugin_check_agrees_with_the_loader():
    # whatever this machine has: the check says "missing" exactly when dlopen fails
    plugin = pc.xcb_plugin()
    missing = pc.missing_libraries(plugin)
    try:
        ctypes.CDLL(str(plugin))
        loads = True
    except OSError as exc:
        loads = False
        assert any(lib in str(exc) for lib in missing), (missing, str(exc))
    assert loads == (missing == [])


def test_problem_names_the_packages_and_respects_other_platforms(monkeypatch):
    monkeypatch.setattr(pc.sys, "platform", "linux")
    monkeypatch.setattr(pc, "xcb_plugin", lambda: pc.Path("/x/libqxcb.so"))
    monkeypatch.setattr(pc, "missing_libraries", lambda path: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    monkeypatch.setattr(pc.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(pc, "is_root", lambda: False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    problem = pc.platform_problem()
    assert problem.endswith("are missing: sudo apt-get install libxcb-icccm4 libxcb-keysyms1"), problem
    assert "xcb-cursor0" not in problem  # Qt's own hint names this one whatever is missing
    monkeypatch.delenv("QT_QPA_PLATFORM")  # the default platform on X11 is xcb too
    assert pc.platform_problem() == problem
    for other in ("offscreen", "wayland;xcb", "vnc:size=800x600"):
        monkeypatch.setenv("QT_QPA_PLATFORM", other)
        assert pc.platform_problem() is None

    monkeypatch.setattr(pc, "missing_libraries", lambda path: [])
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    assert pc.platform_problem() is None
    monkeypatch.delenv("DISPLAY")
    assert "$DISPLAY is not set" in pc.platform_problem()


def test_root_is_not_told_to_use_sudo(monkeypatch):
    # a root shell in a container often has no sudo at all: the hint must be a command that runs there
    monkeypatch.setattr(pc.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(pc, "is_root", lambda: True)
    assert pc.install_hint(["libxcb-icccm.so.4"]) == "apt-get install libxcb-icccm4"
    monkeypatch.setattr(pc, "is_root", lambda: False)
    assert pc.install_hint(["libxcb-icccm.so.4"]) == "sudo apt-get install libxcb-icccm4"


def test_unknown_library_and_import_errors():
    assert pc.install_hint(["libweird.so.3"]).startswith("install the packages that provide libweird.so.3")
    exc = ImportError("libEGL.so.1: cannot open shared object file: No such file or directory")
    assert pc.import_problem(exc).startswith("the studio cannot load Qt: libEGL.so.1 is missing:")
    assert pc.import_problem(ImportError("No module named 'PySide6'")) is None


def test_gui_command_says_one_line_instead_of_aborting(monkeypatch, capsys):
    from dynastudio.core.cli import main

    monkeypatch.setattr(pc, "platform_problem", lambda: "the studio's window system plugin (Qt xcb) cannot load: x")
    rc = main(["gui"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: the studio's window system plugin (Qt xcb) cannot load: x"]
