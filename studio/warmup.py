"""Import the engine's heavy modules up front, on the GUI thread, before the window shows.

A job imports the engine (transformers, torch._dynamo, sympy...: 1,600 modules, seconds) the
first time it runs. Imports of C extensions keep the GIL for up to ~600 ms at a time, so doing them
on the worker thread froze the window at the start of the first training (measured by
bench/gui_responsiveness.py); doing them once at start-up costs the same seconds while nothing is
shown yet.
"""
from __future__ import annotations

import gc
import importlib
import time

# what the jobs import lazily, heaviest first
MODULES = (
    "dynastudio.core.jobs",
    "transformers.models.bert.modeling_bert",
    "transformers.models.roberta.modeling_roberta",
    "transformers.tokenization_utils_tokenizers",
    "dynastudio.core.extract",
    "dynastudio.core.export",
    "dynastudio.core.latency",
)


def warm_up(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import `modules`; returns seconds per module. A module that fails to import is left to its job to report."""
    took = {}
    for name in modules:
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # the job that needs it raises the real error in a dialog
            continue
        took[name] = time.perf_counter() - t
    # everything imported so far lives as long as the app: out of the collector's sight, a full
    # collection (triggered by a job's allocations, GIL held throughout) no longer walks it
    gc.collect()
    gc.freeze()
    return took
