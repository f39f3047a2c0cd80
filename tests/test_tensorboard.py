"""What a person sees in TensorBoard. A real TensorBoard server on loopback reads two short fit runs and a test of
the first, and the test asks it over HTTP, through the endpoints its own web page uses, for the runs' names,
scalars, custom-scalars layout, figures and HParams (with the metrics the runs really reached, not Lightning's
placeholder ``hp_metric = -1``, and the test metrics in the trial of their fit)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from matplotlib.image import imread

from conftest import fit_config, free_port, run_cli, runs as run_folders
from lit_regression.callbacks import ParameterReport

EPOCHS = 15
TENSORBOARD = Path(sys.executable).with_name("tensorboard")


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
                if all("train_loss" in scalars.get(r, {}) and "visuals/loss_curves" in images.get(r, {}) for r in runs):
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
    """Two runs (linear model, two-layer network), a test of the first from its last.ckpt, and a TensorBoard
    serving them; stopped afterwards."""
    root = tmp_path_factory.mktemp("tb") / "runs"
    clis = [fit_config("line_linear.yaml", root, "--trainer.max_epochs", str(EPOCHS))]
    tested = run_cli("test", "--ckpt_path", "last", root=root)
    clis.append(fit_config("line_two_layer.yaml", root, "--trainer.max_epochs", str(EPOCHS)))
    runs = [v.relative_to(root).as_posix() for v in run_folders(root)]
    server = Server(root, root.parent / "tensorboard.log")
    try:
        server.wait_for(runs)
        yield server, dict(zip(runs, clis)), tested
    finally:
        server.stop()


def final(cli, name: str) -> float:
    """The metric's value at the end of fit, as the parameter report kept it (the CLI's prediction pass after fit
    clears ``trainer.callback_metrics``)."""
    (report,) = [c.report for c in cli.trainer.callbacks if isinstance(c, ParameterReport)]
    return report["metrics"][name]


def test_runs_are_named_after_what_ran(board):
    server, runs, _ = board
    linear, two_layer = runs
    assert linear.startswith("line_linear/LinearRegression-y/") and two_layer.startswith("line_two_layer/TwoLayerRegression-y/")
    assert sorted(server.get("/data/runs")) == sorted([*runs, f"{linear}/test"])  # the test is a stage of its fit


def test_runs_and_scalars(board):
    server, runs, _ = board
    tags = server.get("/data/plugin/scalars/tags")
    for run, cli in runs.items():
        assert {"train_loss", "val_loss", "val_r2"} <= set(tags[run])
        assert "epoch" not in tags[run]  # Lightning's epoch-against-step chart would open the page
        assert "hp_metric" not in tags[run]  # Lightning's placeholder is off
        for name in ("train_loss", "val_loss"):
            points = server.get("/data/plugin/scalars/scalars", run=run, tag=name)  # [wall_time, step, value]
            assert [step for _, step, _ in points] == list(range(EPOCHS))  # one per epoch, nothing added at the end
            assert points[-1][2] == pytest.approx(final(cli, name), rel=1e-6)


def test_custom_scalars_put_the_losses_on_one_chart(board):
    server, runs, _ = board
    (category,) = server.get("/data/plugin/custom_scalars/layout")["category"]
    charts = [(chart["title"], chart["multiline"]["tag"]) for chart in category["chart"]]
    assert charts[:2] == [("loss", ["^(train|val|test)_loss$"]), ("r2", ["^(train|val|test)_r2$"])]
    assert {title for title, _ in charts[2:]} == {"mae", "mse", "rmse"}
    linear = next(iter(runs))
    lines = server.get("/data/plugin/custom_scalars/scalars", run=linear, tag="^(train|val|test)_loss$")
    assert set(lines["tag_to_events"]) == {"train_loss", "val_loss"} and lines["regex_valid"]


def test_figures_are_images(board):
    server, runs, _ = board
    tags = server.get("/data/plugin/images/tags")
    for run in runs:
        assert set(tags[run]) == {"visuals/data_and_predictions", "visuals/loss_curves"}  # after the metrics
        for tag in tags[run]:
            (sample,) = server.get("/data/plugin/images/images", run=run, tag=tag, sample="0")
            assert sample["step"] == EPOCHS  # logged at the end of fit, at the final global step
            png = server.get("/data/plugin/images/individualImage", **dict(urllib.parse.parse_qsl(sample["query"])))
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            height, width, channels = imread(io.BytesIO(png)).shape
            assert height >= 300 and width >= 400 and channels in (3, 4)


def test_hparams_with_real_final_metrics(board):
    server, runs, tested = board
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"]: h for h in experiment["hparamInfos"]}
    # the union of both runs' model and data arguments
    assert {"lr", "loss", "form", "hidden", "weight", "bias", "val_size", "split", "model", "optimizer", "target",
            "l2"} <= set(hparams)
    assert set(hparams["model"]["domainDiscrete"]) == {"LinearRegression", "TwoLayerRegression"}
    assert "n_features" not in hparams and "n_outputs" not in hparams  # the data's shape, no choice
    assert not any(name.startswith("_") for name in hparams)
    assert set(hparams["lr"]["domainInterval"].values()) == {0.01, 0.001}
    metrics = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {("", "train_loss"), ("", "val_loss"), ("", "val_r2"), ("test", "test_loss")} <= metrics
    assert not any(tag == "hp_metric" for _, tag in metrics)

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": "lr"}, {"hparam": "hidden"}, {"hparam": "model"}, {"hparam": "target"},
                      {"metric": {"tag": "val_loss"}}, {"metric": {"tag": "train_loss"}}, {"metric": {"tag": "val_r2"}},
                      {"metric": {"group": "test", "tag": "test_loss"}}],
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
        assert (group["hparams"]["model"], group["hparams"]["target"]) == (type(cli.model).__name__, "y")
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for name in ("val_loss", "train_loss", "val_r2"):
            assert values[name] == pytest.approx(final(cli, name), rel=1e-6)
            assert values[name] != -1
    # the test of the linear run, from its checkpoint, in the same trial as its fit
    linear = by_run[next(iter(runs))]
    test_loss = next(m["value"] for m in linear["metricValues"] if m["name"] == {"group": "test", "tag": "test_loss"})
    assert test_loss == pytest.approx(tested.trainer.callback_metrics["test_loss"].item(), rel=1e-6)
    assert by_run[next(r for r, c in runs.items() if "hidden" in c.model.hparams)]["hparams"]["hidden"] == 10
