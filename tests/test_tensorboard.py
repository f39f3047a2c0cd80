"""Issue 5: what a person sees in TensorBoard. A real TensorBoard server on loopback reads two short fit runs, and
the test asks it over HTTP, through the endpoints its own web page uses, for the runs' scalars, figures and
HParams (with the metrics the runs really reached, not Lightning's placeholder ``hp_metric = -1``)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from matplotlib.image import imread

from conftest import fit_config, versions
from lit_regression.callbacks import ParameterReport

EPOCHS = 15
TENSORBOARD = Path(sys.executable).with_name("tensorboard")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A TensorBoard process and the JSON of its HTTP endpoints."""

    def __init__(self, logdir: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
             "--load_fast", "false", "--reload_interval", "1"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **query: str):
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        return body if path.endswith("individualImage") else json.loads(body)

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, runs: list[str], timeout: float = 60.0) -> None:
        """Until the server answers and has loaded every run's scalars and images (it loads in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.process.returncode}")
            try:
                scalars, images = self.get("/data/plugin/scalars/tags"), self.get("/data/plugin/images/tags")
                if all("train_loss" in scalars.get(r, {}) and "figures/loss_curves" in images.get(r, {}) for r in runs):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard did not load {runs} within {timeout} s")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """Two runs (linear model, two-layer network) and a TensorBoard serving them; stopped afterwards."""
    root = tmp_path_factory.mktemp("tb") / "runs"
    clis = [fit_config("line_linear.yaml", root, "--trainer.max_epochs", str(EPOCHS)),
            fit_config("line_two_layer.yaml", root, "--trainer.max_epochs", str(EPOCHS))]
    runs = [f"lightning_logs/{v.name}" for v in versions(root)]
    server = Server(root, root.parent / "tensorboard.log")
    try:
        server.wait_for(runs)
        yield server, dict(zip(runs, clis))
    finally:
        server.stop()


def final(cli, name: str) -> float:
    """The metric's value at the end of fit, as the parameter report kept it (the CLI's prediction pass after fit
    clears ``trainer.callback_metrics``)."""
    (report,) = [c.report for c in cli.trainer.callbacks if isinstance(c, ParameterReport)]
    return report["metrics"][name]


def test_runs_and_scalars(board):
    server, runs = board
    assert sorted(server.get("/data/runs")) == sorted(runs)
    tags = server.get("/data/plugin/scalars/tags")
    for run, cli in runs.items():
        assert {"train_loss", "val_loss", "val_r2"} <= set(tags[run])
        assert "hp_metric" not in tags[run]  # Lightning's placeholder is off
        for name in ("train_loss", "val_loss"):
            points = server.get("/data/plugin/scalars/scalars", run=run, tag=name)  # [wall_time, step, value]
            assert [step for _, step, _ in points] == list(range(EPOCHS))  # one per epoch, nothing added at the end
            assert points[-1][2] == pytest.approx(final(cli, name), rel=1e-6)


def test_figures_are_images(board):
    server, runs = board
    tags = server.get("/data/plugin/images/tags")
    for run in runs:
        assert set(tags[run]) == {"figures/data_and_predictions", "figures/loss_curves"}
        for tag in tags[run]:
            (sample,) = server.get("/data/plugin/images/images", run=run, tag=tag, sample="0")
            assert sample["step"] == EPOCHS  # logged at the end of fit, at the final global step
            png = server.get("/data/plugin/images/individualImage", **dict(urllib.parse.parse_qsl(sample["query"])))
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            height, width, channels = imread(io.BytesIO(png)).shape
            assert height >= 300 and width >= 400 and channels in (3, 4)


def test_hparams_with_real_final_metrics(board):
    server, runs = board
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"]: h for h in experiment["hparamInfos"]}
    # the union of both runs' model and data arguments
    assert {"lr", "loss", "form", "hidden", "weight", "bias", "val_size", "split"} <= set(hparams)
    assert not any(name.startswith("_") for name in hparams)
    assert set(hparams["lr"]["domainInterval"].values()) == {0.01, 0.001}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"train_loss", "val_loss", "val_r2"} <= metrics and "hp_metric" not in metrics

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": "lr"}, {"hparam": "hidden"}, {"metric": {"tag": "val_loss"}},
                      {"metric": {"tag": "train_loss"}}, {"metric": {"tag": "val_r2"}}],
        "startIndex": 0,
        "sliceSize": 10,
    }
    groups = server.post("/data/plugin/hparams/session_groups", request)
    assert groups["totalSize"] == 2
    by_run = {g["name"]: g for g in groups["sessionGroups"]}
    assert set(by_run) == set(runs)
    for run, cli in runs.items():
        group = by_run[run]
        assert group["hparams"]["lr"] == cli.model.hparams.lr
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for name in ("val_loss", "train_loss", "val_r2"):
            assert values[name] == pytest.approx(final(cli, name), rel=1e-6)
            assert values[name] != -1
    assert by_run[next(r for r, c in runs.items() if "hidden" in c.model.hparams)]["hparams"]["hidden"] == 10
