"""What the user is told: the one exception type that the command line turns into a short message instead of a
traceback, and single lines on the console."""

import sys

from lightning.pytorch.utilities import rank_zero_only


class InputError(ValueError):
    """Bad user input: a config value, a data file, a checkpoint. The message names what is wrong and what was
    expected; ``lit-regression`` prints it alone and exits with status 2."""


@rank_zero_only
def say(line: str, warning: bool = False) -> None:
    """One line on the console, from the first process only; a warning goes to stderr."""
    print(f"warning: {line}" if warning else line, file=sys.stderr if warning else sys.stdout, flush=True)
