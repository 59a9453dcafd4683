"""One exception type for users' mistakes; the CLI turns it into one line and an exit code."""


class HfrError(Exception):
    """A problem the user can fix: the message names the file or value and what to do.

    exit_code: 2 for bad input or a missing capability (the default), 1 for a failed run.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
