"""DynaBERT Studio engine: data, dynamic slicing, rewiring, distillation, export. No Qt here."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("dynabert-studio")  # one source of truth: pyproject's version
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

import logging as _logging

# Import-time chatter of optional packages, which says nothing to the user: torchao (pulled in by the
# executorch extra, imported by transformers) logs a warning per CUDA kernel it cannot load on a CPU
# build, and torch warns about torchao's enum registration. Real errors still show.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
