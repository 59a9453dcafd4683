"""`hfr-edge doctor`: what this machine has for each stage; exits 0 whatever is missing."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from ..base import console
from .options import write_json


def doctor_command(
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="PATH", help="Also write the findings as JSON "
                                                                                    "to this file ('-': to stdout)")] = None,
) -> None:
    """Show what this machine has for each stage (exits 0 whatever is missing)."""
    from ..doctor import collect, table

    info = collect()
    (console.say if json_out == "-" else console.result)(table(info))  # stdout carries the JSON alone when asked
    if json_out:
        write_json(json_out, info, to_stdout=True)
