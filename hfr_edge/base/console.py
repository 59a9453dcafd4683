"""How hfr-edge talks to people: messages (progress, notes, warnings, errors) go to ONE rich Console
on stderr; stdout carries only what a command was asked to produce (bench's report, doctor's
table). Messages are plain text, never wrapped, never read as markup (file names hold brackets).

A function that may be silenced or captured takes `log`, a text file; None means the console.
Warnings also pass through the standard `logging` module (logger "hfr_edge"), so a program that
embeds hfr-edge can capture them; the console prints them either way.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

_console = None
_logger = logging.getLogger("hfr_edge")


class _ToConsole(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say(f"warning: {record.getMessage()}")


_logger.addHandler(_ToConsole(logging.WARNING))


def console():
    """The stderr Console, made on first use (it looks up sys.stderr at each print, so
    contextlib.redirect_stderr captures it too)."""
    global _console
    if _console is None:
        from rich.console import Console  # noqa: PLC0415 - rich is imported by the CLI anyway

        _console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
    return _console


def show(text) -> str:
    """Printable on any terminal: undecodable bytes of non-UTF-8 file names become U+FFFD."""
    return os.fsencode(os.fspath(text) if isinstance(text, os.PathLike) else str(text)).decode("utf-8", "replace")


def say(message: str, log: Optional[TextIO] = None) -> None:
    """One message line on stderr (or on `log`)."""
    if log is not None:
        print(message, file=log, flush=True)
    else:
        console().print(message)


def warn(message: str, log: Optional[TextIO] = None) -> None:
    if log is not None:
        say(f"warning: {message}", log)
    else:
        _logger.warning(message)


def error(message: str) -> None:
    say(f"hfr-edge: error: {message}")


def result(text: str) -> None:
    """A command's result on stdout (plain, for pipes and files)."""
    print(text, file=sys.stdout, flush=True)
