"""Heavy, optional modules imported where they are used, with one line saying how to get them."""

from __future__ import annotations

import importlib

from .errors import HfrError


def require(module: str, display: str, hint: str):
    """Import `module`, or raise HfrError('<display> is not importable (<why>); <hint>')."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise HfrError(f"{display} is not importable ({exc}); {hint}") from None
