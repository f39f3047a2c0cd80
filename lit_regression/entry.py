"""The ``lit-regression`` command's first step. Importing torch and Lightning takes the first seconds of every
command; a Ctrl-C then ends it with one line, as it does later, not with the traceback of an import."""

import sys


def main() -> None:
    try:
        from lit_regression.cli import main as run
    except KeyboardInterrupt:
        print("lit-regression: interrupted", file=sys.stderr)
        sys.exit(130)
    run()
