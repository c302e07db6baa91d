"""Sizes for the storm, fault and fuzz tests (marker ``soak``): small in ``make test``,
full size in ``make soak``, which sets ``CHATLAB_SOAK=1``."""

from __future__ import annotations

import os

#: True under ``make soak``.
SOAK = os.environ.get("CHATLAB_SOAK") == "1"


def size(small: int, soak: int) -> int:
    """The small size in ``make test``, the soak size in ``make soak``."""
    return soak if SOAK else small
