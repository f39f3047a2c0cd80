"""The one exception type that the command line turns into a short message instead of a traceback."""


class InputError(ValueError):
    """Bad user input: a config value, a data file, a checkpoint. The message names what is wrong and what was
    expected; ``lit-regression`` prints it alone and exits with status 2."""
