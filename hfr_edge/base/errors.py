"""One exception type for users' mistakes; the CLI turns it into one line and an exit code."""


class HfrError(Exception):
    """A problem the user can fix: the message names the file or value and what to do.

    exit_code: 2 for bad input or a missing capability (the default), 1 for a failed run.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException, limit: int) -> str:
    """The first non-empty line of a library's exception (or its type name), cut to `limit` characters,
    for quoting inside a one-line error."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
