"""Progress a person can watch. In a terminal, ``fit`` draws one bar over the run's epochs with the losses;
without one (CI logs, pipes) it prints a few plain lines; lines said during the fit stay intact above the bar."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import CONFIGS, ROOT
from lit_regression.callbacks.progress import RunProgressBar, format_value
from lit_regression.cli import LitRegressionCLI
from lit_regression.errors import say

CLI = [sys.executable, "-m", "lit_regression"]
BAR = ["--trainer.callbacks+=lit_regression.callbacks.progress.RunProgressBar"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "TERM": "xterm", "COLUMNS": "160"}
NUMBER = r"-?\d[\d.]*(?:e[+-]\d+)?"


def render(stream: str) -> list[str]:
    """What a terminal shows after ``stream``: carriage returns, newlines and tqdm's cursor-up applied."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(stream):
        char = stream[i]
        escape = re.match(r"\x1b\[(\d*)([A-Za-z])", stream[i:]) if char == "\x1b" else None
        if escape:
            row = max(row - int(escape.group(1) or 1), 0) if escape.group(2) == "A" else row
            i += escape.end()
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
        else:
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        while len(rows) <= row:
            rows.append([])
        i += 1
    return [("".join(line)).rstrip() for line in rows]


def in_terminal(args: list[str], timeout: float = 120) -> tuple[str, float]:
    """Run ``lit-regression ARGS`` on a pseudo-terminal of 160 x 40; (everything it wrote, seconds it took)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    start = time.monotonic()
    process = subprocess.Popen([*CLI, *args], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=ENV,
                               close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace"), time.monotonic() - start


def piped(args: list[str], timeout: float = 240) -> str:
    """Run ``lit-regression ARGS`` with stdout and stderr into one pipe, as CI logs it; what it printed."""
    result = subprocess.run([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=ENV, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def test_terminal_fit_shows_one_run_bar_with_the_losses(tmp_path):
    stream, seconds = in_terminal(["fit", "--config", str(CONFIGS / "line_linear.yaml"), "--trainer.max_epochs", "200",
                                   "--trainer.default_root_dir", str(tmp_path), *BAR])
    screen = render(stream)
    bars = [line for line in screen if line.startswith("Training")]
    assert len(bars) == 1, "\n".join(screen)  # one bar over the run, left on the screen when it ends
    bar = bars[0]
    assert "100%" in bar and "200/200" in bar, bar
    assert re.search(rf"train_loss={NUMBER}, val_loss={NUMBER}, val_r2={NUMBER}\]$", bar), bar
    assert re.search(r"\[\d\d:\d\d,", bar), bar  # the elapsed time
    assert not any(re.match(r"(Epoch \d|Validation|Sanity)", line) for line in screen), "\n".join(screen)
    assert "v_num" not in stream
    # drawn at most every 0.1 s (plus its first and last drawing), not once per epoch
    draws = stream.count("Training:")
    assert 2 <= draws <= seconds / 0.1 + 3, (draws, seconds)
    # while running it also showed the time left
    assert re.search(r"\d+/200 \[\d\d:\d\d<\d\d:\d\d, train_loss=", stream)


def test_terminal_converged_line_stays_intact_above_the_bar(tmp_path):
    stream, _ = in_terminal(["fit", "--config", str(CONFIGS / "csv_regression.yaml"),
                             "--trainer.default_root_dir", str(tmp_path), *BAR])
    screen = render(stream)
    said = [i for i, line in enumerate(screen) if line.startswith("converged after")]
    assert len(said) == 1, "\n".join(screen)
    line = screen[said[0]]
    assert re.fullmatch(rf"converged after \d+ epochs: the objective's largest gradient, {NUMBER}, is within "
                        rf"{NUMBER}", line), line
    bar = screen[said[0] + 1]  # the bar, finished, on the next line
    assert re.match(r"Training \(stopped\):\s+\d+%\|.*\| \d+/200 \[\d\d:\d\d, train_loss=", bar), bar
    assert sum(line.startswith("Training") for line in screen) == 1


def test_terminal_long_epoch_gets_a_batch_bar_that_goes_away(tmp_path, capsys):
    """An epoch that lasts (here: at once, batch_bar_after=0) shows its batches under the run bar; the epoch bar
    is removed when the epoch ends, the run bar stays."""
    LitRegressionCLI(args=["fit", "--config", str(CONFIGS / "line_linear.yaml"), "--trainer.max_epochs", "2",
                           "--data.batch_size", "4", "--trainer.default_root_dir", str(tmp_path), *BAR,
                           "--trainer.callbacks.tty", "true", "--trainer.callbacks.batch_bar_after", "0",
                           "--trainer.callbacks.refresh_seconds", "0"])
    stream = capsys.readouterr().out
    assert re.search(r"Epoch 1:\s+\d+%\|.*\| \d+/10 ", stream) and re.search(r"Epoch 2:", stream), stream
    screen = render(stream)
    assert not any(line.startswith("Epoch") for line in screen), "\n".join(screen)
    assert [line for line in screen if line.startswith("Training")][0].count("2/2") == 1


@pytest.mark.slow
@pytest.mark.parametrize("config", ["line_linear.yaml", "csv_regression.yaml"])
def test_without_terminal_a_fit_prints_a_few_plain_lines(config, tmp_path):
    out = piped(["fit", "--config", str(CONFIGS / config), "--trainer.default_root_dir", str(tmp_path), *BAR])
    assert "\r" not in out and "\x1b[" not in out, out  # no bar drawing in a log
    lines = out.splitlines()
    progress = [line for line in lines if line.startswith("epoch ")]
    assert 1 <= len(progress) <= 12, out
    for line in progress:
        assert re.fullmatch(rf"epoch \d+/\d+( \(stopped\))? \[\d\d:\d\d(<\d\d:\d\d)?\] train_loss={NUMBER}, "
                            rf"val_loss={NUMBER}, val_r2={NUMBER}", line), line
    if config == "line_linear.yaml":  # every tenth of the 1000 epochs
        assert [line.split()[1] for line in progress] == [f"{k}/1000" for k in range(100, 1001, 100)]
        assert len(lines) <= 40, out
    else:  # converged early: one line; the column and parameter tables' rows grow with the table's width
        assert progress[0].startswith("epoch ") and "(stopped)" in progress[0]
        assert len([line for line in lines if not line.startswith("  ")]) <= 40, out


def test_say_writes_above_a_drawn_bar(capsys):
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    bar = Tqdm(total=10, file=sys.stdout, desc="Training", ncols=80, mininterval=0)
    bar.update(3)
    say("converged after 3 epochs: done")
    say("something odd", warning=True)
    bar.update(1)
    bar.close()
    captured = capsys.readouterr()
    screen = render(captured.out)
    assert screen[0] == "converged after 3 epochs: done", screen
    assert screen[1].startswith("Training:  40%") and len(screen) <= 3, screen
    assert captured.err == "warning: something odd\n"


def test_say_without_a_bar_is_one_plain_line(capsys):
    say("converged after 3 epochs: done")
    assert capsys.readouterr().out == "converged after 3 epochs: done\n"


def test_values_are_four_significant_digits():
    assert [format_value(v) for v in (0.0102565, 1.0, 0.000330824, 12345.6, -118.26, float("nan"))] == [
        "0.01026", "1.000", "0.0003308", "1.235e+04", "-118.3", "nan"]


def test_progress_bar_falls_back_to_callback_metrics():
    import torch

    class FakeTrainer:
        progress_bar_metrics = {"train_loss": 0.5}
        callback_metrics = {"train_loss": torch.tensor(9.0), "val_loss": torch.tensor(0.25), "val_mae": torch.tensor(1.0),
                            "val_acc": torch.tensor(0.75)}

    assert RunProgressBar().postfix(FakeTrainer()) == "train_loss=0.5000, val_loss=0.2500, val_acc=0.7500"
