"""The documented commands run: README.md and every docs/*.md page, block by block, as a reader would type them.

Convention for the Markdown pages:

* a fenced block tagged ``bash`` is run, with ``bash -e``, in the root of the repository's copy;
* a fenced block tagged ``python`` is run by the virtualenv's Python, in the same place;
* a block that cannot run here is tagged ``text`` or ``console`` and is not run: one that needs GPUs, SLURM or
  several machines, one that starts a server that does not stop by itself (``make tensorboard``), a command that
  takes many minutes (``make bench``), sample output, and the like. Any other tag (``json``, ``mermaid``) is not
  run either.

Each page runs in a fresh copy of the repository in ``tmp_path``: the files git tracks, and the new ones it does
not ignore (``git ls-files --cached --others --exclude-standard``), copied with ``shutil.copy2`` so that their
times are kept. The copy's ``.venv`` links to the virtualenv that runs this test (``sys.prefix``), entry by
entry, with an install stamp of its own, so ``make run`` finds it installed and never reinstalls into it. The
blocks of a page run in order, each one seeing what the earlier ones made (``runs/``, files). ``make test`` is the
one command skipped: it would run this test inside itself.

A block fails on a non-zero exit status, or on a line of its stderr that starts with ``Traceback``. Every block
of a page runs even after one fails, and the page's failures are reported together.

Pages are parameters, so ``pytest -n 2`` spreads them over the workers. Each page takes from a few seconds to
about a minute of CPU (every command starts the CLI, about 4 s of imports); some pages take more than a minute
on a shared two-core machine, so the test is marked slow (``make test`` runs it, ``make test-fast`` does not).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
RUN = {"bash", "python"}  # the fence tags that are run; ``text`` and ``console`` mark blocks that are not
SKIPPED = {"make test"}  # commands left out of a bash block (see the module's docstring)
TIMEOUT_S = 600  # per block: generous, so that a loaded machine does not fail a page
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[\w+-]*)[^\n]*$")
STAMP = ".installed"  # the Makefile's marker of an installed .venv


def blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, tag, code)`` of every fenced block of a Markdown page, in order; ``line`` counts from 1 at the
    opening fence. Indented blocks (inside a list) are dedented by their fence's indent."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, tag = opening["indent"], opening["fence"], opening["tag"].lower()
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        found.append((i + 1, tag, "\n".join(body) + "\n"))
        i = j + 1
    return found


def without_skipped(code: str) -> str:
    """A bash block without the commands of ``SKIPPED`` (a line that is one of them, with or without a comment)."""
    return "\n".join(line for line in code.splitlines() if line.split("#", 1)[0].strip() not in SKIPPED) + "\n"


def repository_copy(dest: Path) -> None:
    """The files of the repository (tracked, and new ones git does not ignore) copied into ``dest`` with their
    times, and ``dest/.venv`` made of links to this virtualenv's entries plus an install stamp of its own."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    venv = Path(sys.prefix)
    (dest / ".venv").mkdir()
    for entry in venv.iterdir():
        if entry.name != STAMP:
            (dest / ".venv" / entry.name).symlink_to(entry)
    # newer than pyproject.toml and constraints.txt (copied with their times): make sees .venv installed
    (dest / ".venv" / STAMP).touch()


def run_block(tag: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MAKEFLAGS", None)  # make inside pytest-xdist or make test: no jobserver of the caller's
    env.pop("MAKELEVEL", None)
    if tag == "bash":
        command = ["bash", "-e", "-c", without_skipped(code)]
        stdin = None
    else:
        command = [str(cwd / ".venv" / "bin" / "python"), "-"]
        stdin = code
    return subprocess.run(command, check=False, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_documented_commands_run(page: str, tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout (the copy is made from git ls-files)")
    runnable = [(line, tag, code) for line, tag, code in blocks((ROOT / page).read_text()) if tag in RUN]
    if not runnable:
        return  # nothing to run on this page (diagrams, tables)
    copy = tmp_path / "repo"
    copy.mkdir()
    repository_copy(copy)
    failures, started, cpu = [], time.monotonic(), _children_cpu()
    for line, tag, code in runnable:
        try:
            result = run_block(tag, code, copy)
        except subprocess.TimeoutExpired:
            failures.append(f"{page}:{line} ({tag}): still running after {TIMEOUT_S} s\n{code}")
            continue
        traceback = [n for n in result.stderr.splitlines() if n.startswith("Traceback")]
        if result.returncode != 0 or traceback:
            why = f"exit status {result.returncode}" if result.returncode != 0 else "a Traceback on stderr"
            failures.append(f"{page}:{line} ({tag}): {why}\n--- block ---\n{code}--- stdout (end) ---\n"
                            f"{tail(result.stdout)}\n--- stderr (end) ---\n{tail(result.stderr)}")
    print(f"{page}: {len(runnable)} blocks in {time.monotonic() - started:.1f} s, "
          f"{_children_cpu() - cpu:.1f} s of CPU")
    assert not failures, "\n\n".join(failures)
