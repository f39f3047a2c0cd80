"""What the user is told: the one exception type that the command line turns into a short message instead of a
traceback, and single lines on the console."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from lightning.pytorch.utilities import rank_zero_only

_HEARD: ContextVar[list[str] | None] = ContextVar("heard", default=None)  # the warnings of a heard() block


class InputError(ValueError):
    """Bad user input: a config value, a data file, a checkpoint. The message names what is wrong and what was
    expected; ``lit-regression`` prints it alone and exits with status 2.

    ``everywhere``: every process raises the same error at the same point (a check of the files or arguments
    that each process makes alike), so only the first process prints it."""

    def __init__(self, message: str, everywhere: bool = False) -> None:
        super().__init__(message)
        self.everywhere = everywhere


def count(n: int, noun: str, plural: str | None = None, spec: str = "") -> str:
    """``n`` and ``noun`` in the number that ``n`` asks for: ``count(1, "row")`` is ``1 row``, ``count(2, "row")``
    ``2 rows``; ``plural`` where adding ``s`` (``es`` after s, x, sh, tch; ``ies`` for a final consonant + y) is
    wrong. ``spec`` formats the number (``","``: ``1,024 rows``)."""
    if n == 1:
        word = noun
    elif plural is not None:
        word = plural
    elif noun.endswith(("s", "x", "sh", "tch")):  # batches, but epochs
        word = noun + "es"
    elif noun.endswith("y") and noun[-2:-1] not in "aeiou":
        word = noun[:-1] + "ies"
    else:
        word = noun + "s"
    return f"{n:{spec}} {word}"


@rank_zero_only
def say(line: str, warning: bool = False) -> None:
    """One line on the console, from the first process only; a warning goes to stderr. Safe while a progress bar
    is drawn: the line appears above it, intact. Inside :func:`heard`, a warning is kept for the caller instead."""
    kept = _HEARD.get()
    if warning and kept is not None:
        kept.append(line)
        return
    write_line(f"warning: {line}" if warning else line, sys.stderr if warning else sys.stdout)


@contextmanager
def heard() -> Iterator[list[str]]:
    """The warnings :func:`say` gives inside the block (each line without ``warning: ``), kept in the list this
    yields instead of written to stderr: a server hands them back with the request that caused them. Per thread
    and per asyncio task (a context variable)."""
    token = _HEARD.set([])
    try:
        yield _HEARD.get()
    finally:
        _HEARD.reset(token)


def write_line(text: str, stream) -> None:
    """Write ``text`` and a newline to ``stream``, flushed. Progress bars drawn on the console (tqdm's, on stdout
    or stderr) are cleared first and drawn again below the line, as ``tqdm.write`` does, so the line is neither
    glued to a bar nor overwritten by its next refresh; bars not drawn yet (waiting for their ``delay``) stay
    hidden."""
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # no tqdm imported: no bar to mind
    bars = [] if tqdm is None else [b for b in list(getattr(tqdm, "_instances", ())) if _drawn(b)]
    if not bars:
        print(text, file=stream, flush=True)
        return
    with tqdm.get_lock():
        for bar in bars:
            bar.clear(nolock=True)
            bar.fp.flush()  # before the line, which may go to the other stream
        stream.write(text + "\n")
        stream.flush()
        for bar in bars:
            bar.refresh(nolock=True)


def _drawn(bar) -> bool:
    """Whether a tqdm bar is on the console now: open, shown (past its ``delay``), on stdout or stderr."""
    try:
        return (not bar.disable and bar.last_print_t >= bar.start_t + bar.delay
                and any(bar.fp == f for f in (sys.stdout, sys.stderr)))
    except AttributeError:  # not fully set up
        return False
