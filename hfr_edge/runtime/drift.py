"""Drift watch (placeholder until the statistics land)."""

from __future__ import annotations

from ..base.errors import HfrError

MODES = ("off", "warn", "stop")


def open_watch(mode, reference, view, window, model, log=None):
    if mode not in MODES:
        raise HfrError(f"--drift {mode!r} must be one of: {', '.join(MODES)}")
    return None
