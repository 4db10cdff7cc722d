"""The studio's `dynastudio gui` command, plugged into the engine's CLI through an entry point (no Qt import here)."""

from __future__ import annotations

from dynastudio.core.errors import UserError

QT_PACKAGES = ("PySide6", "shiboken6", "pyqtgraph")


def register(sub) -> None:
    g = sub.add_parser("gui", help="open the studio (Qt desktop app)")
    g.add_argument(
        "dir", nargs="?", help="a project folder to open (with --demo: where the demo project lives, default ./demo)"
    )
    g.add_argument("--demo", action="store_true", help="open the built-in demo project, creating it the first time")
    g.add_argument(
        "--screenshot", metavar="PNG", help="save a picture of the window once it is shown, then quit (checks a set-up)"
    )
    g.set_defaults(func=cmd_gui)


def cmd_gui(a) -> int:
    from .platform_check import import_problem, platform_problem

    # Qt aborts the process (exit 134) when its platform plugin cannot load: look before it does
    if problem := platform_problem():
        raise UserError(problem)
    try:
        from .app import main
    except ImportError as exc:
        if problem := import_problem(exc):  # a system library Qt links against, not a Python package
            raise UserError(problem) from None
        if not (exc.name or "").startswith(QT_PACKAGES):
            raise
        raise UserError(
            f"the studio needs {exc.name}, which is not installed: pip install 'dynabert-studio[studio]'"
        ) from None
    argv = (
        ([a.dir] if a.dir else [])
        + (["--demo"] if a.demo else [])
        + (["--screenshot", a.screenshot] if a.screenshot else [])
    )
    code = main(argv)
    # The window has closed: jobs were stopped at a checkpoint (aboutToQuit) and every file is written
    # atomically, so nothing is left to save. The interpreter's own teardown of Qt, torch and pyqtgraph
    # objects crashed here now and then (a segfault with no Python frame, after exit had begun), so the
    # process ends without it.
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
