"""Writing a run's files, the one way every artifact is written: checkpoints, predictions, the report, the weights and
the figures.

* :func:`atomic` writes to a hidden temporary file beside the target and renames it over the target once it is
  complete, so that a killed process leaves the old file or the new one, never a part of one (``fsync`` also
  flushes it to the disk before the rename: that survives a power failure, not only a kill).
* A write that the machine refuses (no space left, no permission, a read-only disk, a file where a folder should
  be) becomes a :class:`WriteError`: one line that names the file, says it was not saved and what the run had
  saved before it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from lit_regression.errors import InputError

RUN_MARKERS = ("checkpoints", "hparams.yaml", "config.yaml")  # what a run's folder holds from its start
SHOWN = 6  # saved files named in a WriteError's line


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


class WriteError(InputError):
    """A file the machine would not let us write: the line names it, says that it was not saved and which files of
    its run were saved before (a temporary file of the failed write is removed)."""

    def __init__(self, path: str, err: BaseException, folder: bool = False) -> None:
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err):
            reason = "no space left on the device"
        else:
            reason = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
        what = f"cannot make the folder {path!r} ({reason})" if folder else \
            f"cannot write {path!r} ({reason}): it was not saved"
        super().__init__(f"{what}; {saved(path)}")
        self.path = path


def saved(path: str) -> str:
    """What the run that ``path`` belongs to had saved: its folder (the nearest one above ``path`` that holds a
    run's ``checkpoints`` folder or ``hparams.yaml``) and the files in it, temporaries left out."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(3):  # a run's files lie at most two folders down (checkpoints/, figures/)
        if any(os.path.exists(os.path.join(folder, m)) for m in RUN_MARKERS):
            break
        folder = os.path.dirname(folder)
    else:
        folder = os.path.dirname(os.path.abspath(path))
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files += [os.path.relpath(os.path.join(root, n), folder) for n in sorted(names)
                  if not (n.startswith(".") and n.endswith(".tmp")) and "tfevents" not in n]
    if not os.path.isdir(folder) or not files:
        return "nothing of this run was saved"
    more = f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
    return f"saved in {folder!r}: {', '.join(files[:SHOWN])}{more}"


def make_folder(folder: str) -> None:
    """``os.makedirs(folder, exist_ok=True)``, a refusal as a :class:`WriteError`."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise WriteError(folder, err, folder=True) from None


def _remove_stale_temporaries(folder: str, name: str) -> None:
    """Temporary files of ``name`` left by writers that were killed (their process no longer exists)."""
    if os.name != "posix":  # os.kill(pid, 0) is no existence test elsewhere
        return
    prefix = f".{name}."
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix) : -len(".tmp")].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.remove(os.path.join(folder, entry))
            except OSError:
                pass
        except OSError:  # exists but is not ours (PermissionError): leave it
            pass


@contextmanager
def atomic(path: str | os.PathLike, fsync: bool = False, clean: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: it appears at ``path`` only when the block ends without an error
    (``os.replace`` of a temporary file in the same folder). ``clean`` first removes temporary files of ``path``
    that killed writers left behind. A refused write raises :class:`WriteError`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    make_folder(folder)
    if clean:
        _remove_stale_temporaries(folder, name)
    # a hidden name with its own suffix, so that no search for checkpoints or predictions ever picks it up
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise WriteError(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes it private; the file gets the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.remove(tmp)
        except OSError:
            pass
        cause = _os_error(err)
        if cause is not None:
            raise WriteError(path, cause) from None
        raise


REFUSALS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR}


def refused_write(err: BaseException) -> WriteError | None:
    """A write that the machine refused somewhere in ``err``'s chain (a library's own write: Lightning's
    ``hparams.yaml``, say) as a :class:`WriteError`; ``None`` for any other error."""
    cause = _os_error(err)
    if cause is None or cause.errno not in REFUSALS or not cause.filename:
        return None
    return WriteError(os.fspath(cause.filename), cause)


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError that ``err`` is or was raised from: pyarrow's IO errors are OSErrors, torch's writer wraps the
    failed write of its file in a RuntimeError."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            return err
        err = err.__cause__ or err.__context__
    return None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic(path) as f:
        f.write(data)
