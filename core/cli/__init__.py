"""`dynastudio`: the pipeline headless, with progress bars; user mistakes exit 2 with one line on stderr.

The commands live by what they do: pipeline (new, run, stop, status), results (importance, report, latency,
device-kit, export) and estimate; progress holds the event sinks they share. `python -m dynastudio.core.cli`
runs `main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib.metadata import entry_points

from .. import malloc, threads
from ..errors import UserError
from . import estimate, pipeline, results, search


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynastudio", description="DynaBERT Studio: one model, every size.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pipeline.add_parsers(sub)
    results.add_parsers(sub)
    estimate.add_parsers(sub)
    search.add_parsers(sub)
    _plugin_commands(sub)
    return p


def _plugin_commands(sub) -> None:
    """Commands that front ends add (the studio adds `gui`) through the `dynastudio.commands` entry points:
    the engine never imports a front end."""
    for ep in sorted(entry_points(group="dynastudio.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # a front end whose own dependencies are missing: say so when it is called
            p = sub.add_parser(ep.name, help=f"(unavailable: {exc.name or exc} is not installed)")
            p.set_defaults(func=lambda a, n=ep.name, e=exc: _unavailable(n, e))
            continue
        register(sub)


def _unavailable(name: str, exc: ImportError) -> int:
    raise UserError(
        f"`dynastudio {name}` needs {exc.name or exc}, which is not installed: pip install 'dynabert-studio[studio]'"
    )


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a failed check or a bug (with its traceback), 2 a user's mistake (one line), 130 stopped."""
    # before anything imports torch: OpenMP reads its wait policy once, when it loads (core/threads.py says why)
    threads.set_wait_policy()
    args = build_parser().parse_args(argv)
    try:
        if argv is None and args.cmd == "run" and not args.follow:
            # a training process: restart it with tcmalloc when the machine has it (core/malloc.py says why)
            malloc.reexec([sys.executable, "-m", "dynastudio.core.cli", *sys.argv[1:]])
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dynastudio report DIR | head -1`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again otherwise
        return 141  # as a process killed by SIGPIPE
    except Exception:
        traceback.print_exc()
        print("error: an internal error happened (the traceback above shows where): please report it", file=sys.stderr)
        return 1
    finally:
        threads.unregister()  # a caller that goes on (a test, a notebook) no longer counts as computing
