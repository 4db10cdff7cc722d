"""`python -m dynastudio.core.cli` (and `torchrun -m dynastudio.core.cli`): the `dynastudio` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
