"""``lit-regression serve``: real server processes answered over HTTP give what ``lit_regression.load(ckpt).predict``
gives, refuse bad requests one by one with a 4xx and keep serving, batch concurrent requests, run the model in
onnxruntime on request, and stop cleanly on SIGTERM and Ctrl-C.

The servers (a linear regression, a logistic one, the logistic one in onnxruntime) start together once for the
module; the tests that stop them come last (a server stopped earlier is started again when asked for)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import torch

from conftest import fit_config, free_port, run_cli, versions
import lit_regression
from lit_regression.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve")]

CLI = [str(Path(sys.executable).with_name("lit-regression"))]
READY_S = 90  # a server's start: two processes import torch and load the checkpoint, on 2 busy cores
STOP_S = 10  # SIGTERM or Ctrl-C to exit (the HTTP server waits up to serve.GRACE_S for requests in progress)

# rows as people send them: odd names, a gap in an imputed column, a category not seen in training, an id
RECORDS = [
    {"order id": "A1", "Größe (cm)": 172.5, "colour": "red", "weight": 70.0},
    {"order id": "A2", "Größe (cm)": None, "colour": "pink", "weight": 81.5},
    {"order id": "A3", "Größe (cm)": 160.0, "colour": "blue", "weight": 55},
]
UNSEEN = "column 'colour' has 1 row with categories not seen in training ('pink')"


def columns(records: list[dict]) -> dict[str, list]:
    return {name: [r.get(name) for r in records] for name in records[0]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One small regression and one classifier (a few epochs) on a made-up table: model kind -> last.ckpt."""
    folder = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    n = 120
    table = pd.DataFrame({"order id": [f"o{i}" for i in range(n)], "Größe (cm)": rng.normal(170, 10, n).round(1),
                          "colour": rng.choice(["red", "green", "blue"], n), "weight": rng.normal(70, 8, n).round(1)})
    table.loc[3, "Größe (cm)"] = np.nan
    table["price"] = (0.5 * table["Größe (cm)"].fillna(170) + table["colour"].map({"red": 3, "green": -2, "blue": 0})
                      + rng.normal(0, 1, n))
    table["kind"] = np.where(table["price"] > table["price"].median(), "big", "small")
    table.drop(columns=["kind"]).to_csv(folder / "price.csv", index=False)
    table.drop(columns=["price"]).to_csv(folder / "kind.csv", index=False)
    found = {}
    for kind, model, target in (("linear", "LinearRegression", "price"), ("logistic", "LogisticRegression", "kind")):
        run_cli("fit", "--model", model, "--data", "TableDataModule", "--data.path", folder / f"{target}.csv",
                "--data.target", target, "--data.id_column", "order id", "--data.impute", "mean",
                "--trainer.max_epochs", "5", "--trainer.enable_model_summary", "false", root=folder / kind)
        found[kind] = versions(folder / kind)[0] / "checkpoints" / "last.ckpt"
    return found


def descendants(pid: int) -> list[int]:
    """The processes under ``pid``, children first (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")
    except OSError:
        return ""


class Server:
    """A ``lit-regression serve`` process on a free port; its own session, so that Ctrl-C can reach its whole
    process group as a terminal's does."""

    def __init__(self, checkpoint: Path, *args: str, folder: Path) -> None:
        self.command, self.folder = [*CLI, "serve", "--ckpt_path", str(checkpoint), *args], folder
        self.start()

    def start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out, self.err = self.folder / f"{self.port}.out", self.folder / f"{self.port}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([*self.command, "--port", str(self.port)], stdout=out, stderr=err,
                                            start_new_session=True)

    def wait_ready(self) -> Server:
        """Until the server has said ``ready`` and answers ``/health`` (its own line: not another process that
        took its port); started again on another port where another process took it first."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert "is not free" in self.err.read_text(), self.err.read_text()
                self.start()
            try:
                if ("ready (stop with Ctrl-C)" in self.out.read_text()
                        and requests.get(f"{self.url}/health", timeout=2).status_code == 200):
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready after {READY_S} s: {self.err.read_text()}")

    def post(self, body, **kwargs) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        return requests.post(f"{self.url}/predict", data=data, timeout=60, **kwargs)

    def predictions(self, body) -> tuple[pd.DataFrame, list[str]]:
        answer = self.post(body)
        assert answer.status_code == 200, answer.text
        content = answer.json()
        return pd.DataFrame(content["predictions"]), content["warnings"]

    def stop(self, signum: int, group: bool) -> tuple[int, float, list[int]]:
        """Send ``signum`` (to the process group, as Ctrl-C in a terminal, or to the server alone, as ``kill``);
        return the exit status, the seconds to exit and the processes that were under it."""
        under = descendants(self.process.pid)
        start = time.monotonic()
        (os.killpg if group else os.kill)(self.process.pid, signum)
        status = self.process.wait(timeout=30)
        return status, time.monotonic() - start, under

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


SERVERS = {"linear": ("linear", "--batch_timeout", "0.05"),  # name: model kind, arguments (the window is wide
           "logistic": ("logistic",),                         # enough that concurrent requests batch)
           "onnx": ("logistic", "--onnx", "--workers", "2")}


class Servers:
    """The module's servers, started together (each start is mostly waiting on imports): name -> a ready
    :class:`Server`, started again where a test stopped it."""

    def __init__(self, checkpoints: dict[str, Path], folder: Path) -> None:
        self.checkpoints, self.folder = checkpoints, folder
        self.running = {name: self._start(name) for name in SERVERS}

    def _start(self, name: str) -> Server:
        kind, *args = SERVERS[name]
        return Server(self.checkpoints[kind], *args, folder=self.folder)

    def __getitem__(self, name: str) -> Server:
        if self.running[name].process.poll() is not None:
            self.running[name] = self._start(name)
        return self.running[name].wait_ready()

    def close(self) -> None:
        for server in self.running.values():
            server.kill()


@pytest.fixture(scope="module")
def servers(checkpoints, tmp_path_factory):
    running = Servers(checkpoints, tmp_path_factory.mktemp("servers"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def predictors(checkpoints):
    return {kind: lit_regression.load(path) for kind, path in checkpoints.items()}


def assert_same(answer: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(answer.columns) == list(expected.columns)
    for name in expected.columns:
        if pd.api.types.is_float_dtype(expected[name]):
            assert answer[name].to_numpy(float) == pytest.approx(expected[name].to_numpy(float), rel=1e-5, abs=1e-7)
        else:
            assert answer[name].tolist() == expected[name].tolist(), name


@pytest.mark.parametrize("kind", ["linear", "logistic"])
def test_answers_are_what_predict_gives(servers, predictors, kind):
    server = servers[kind]
    expected = predictors[kind].predict(columns(RECORDS))
    for body in (RECORDS, columns(RECORDS)):  # records, and a dict of columns
        answer, warnings = server.predictions(body)
        assert_same(answer, expected)
        assert len(warnings) == 1 and UNSEEN in warnings[0], warnings
    one, warnings = server.predictions(RECORDS[0])  # a record of single values: one row
    assert_same(one, predictors[kind].predict(RECORDS[0]))
    assert warnings == []
    lacking = [{k: v for k, v in r.items() if k != "Größe (cm)"} if i == 2 else r for i, r in enumerate(RECORDS)]
    answer, _ = server.predictions(lacking)  # a key a record lacks: an empty cell, imputed
    assert_same(answer, predictors[kind].predict({**columns(RECORDS), "Größe (cm)": [172.5, None, None]}))
    if kind == "logistic":
        assert list(answer.columns) == ["row", "order id", "kind", "prob_big", "prob_small"]
    else:
        assert list(answer.columns) == ["row", "order id", "price"]


def raw_request(port: int, head: bytes, chunks=(), read_timeout: float = 10) -> tuple[int, bytes]:
    """Send ``head`` and then ``chunks`` (stopping at the first the server refuses, once it has answered) over a
    plain socket; return the status and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as conn:
        conn.sendall(head)
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except OSError:  # the server answered and closed
                break
        answer = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
                head_end = answer.find(b"\r\n\r\n")
                if head_end >= 0 and b"content-length" in answer[:head_end].lower():
                    length = int(answer[:head_end].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(answer) >= head_end + 4 + length:
                        break
        except ConnectionResetError:
            pass
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_bad_requests_get_one_line_and_the_server_goes_on(servers, predictors):
    server = servers["linear"]
    good = columns(RECORDS)
    expected = predictors["linear"].predict(good)
    cases = [
        (b'[{"order id": "A1", "Gr', 400, "not JSON"),
        (b"", 400, "empty"),
        (b"[]", 400, "no rows"),
        (b"{}", 400, "no rows"),
        (b'"rows"', 400, "a JSON string"),
        (b"[1, 2]", 400, "row 0 is a JSON number"),
        (json.dumps({k: v for k, v in good.items() if k != "colour"}), 422, "'colour'"),
        (json.dumps({k: v for k, v in good.items() if k != "order id"}), 422,
         "rows has no id column 'order id' (data.id_column, written beside each prediction): add it to every row"),
        (json.dumps({**good, "Größe (cm)": [170, "tall", 160]}), 422,
         "'Größe (cm)' has a non-numeric value 'tall'"),
        (json.dumps({**good, "weight": [70, 80]}), 422,
         "the columns differ in length ('order id' has 3 values, 'weight' has 2 values); give each column one value per row"),
    ]
    for body, status, says in cases:
        answer = server.post(body, headers={"Content-Type": "application/json"})
        assert answer.status_code == status, (body, answer.text)
        assert "\n" not in answer.text.strip() and says in answer.json()["detail"], (body, answer.text)
        assert_same(server.predictions(good)[0], expected)  # still serving
    # curl -d sends rows as a form: they are read as JSON all the same
    assert server.post(json.dumps(RECORDS), headers={"Content-Type": "application/x-www-form-urlencoded"}).ok
    # a body over --max_request_mb (4 MB): refused from its Content-Length before it is sent ...
    start = time.monotonic()
    status, body = raw_request(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                            b"Content-Length: 10000000\r\n\r\n")
    assert status == 413 and "larger than 4 MB" in json.loads(body)["detail"] and time.monotonic() - start < 5
    # ... and a chunked one as it passes the limit
    record = json.dumps(RECORDS[0]).encode() + b","
    chunk = b"[" + record * (1_000_000 // len(record))
    chunks = (f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in [chunk] + [chunk[1:]] * 9)
    status, body = raw_request(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                            b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413, body
    assert server.post(b"x" * 5_000_000).status_code == 413  # requests sends it whole, with its length
    assert_same(server.predictions(good)[0], expected)
    errors = server.err.read_text()
    assert "Traceback" not in errors and "POST /predict 422" in errors and "'tall'" in errors  # the console


def test_concurrent_requests_are_each_answered(servers, predictors):
    """16 requests at once, one of them big and three of them bad, meet in the server's batches: each gets its own
    answer."""
    server = servers["linear"]
    rng = np.random.default_rng(1)
    bodies = []
    for i in range(16):
        n = 20_000 if i == 5 else int(rng.integers(1, 6))
        rows = {"order id": [f"r{i}-{j}" for j in range(n)], "Größe (cm)": rng.normal(170, 10, n).round(1).tolist(),
                "colour": rng.choice(["red", "green", "blue", "pink"], n).tolist(),
                "weight": rng.normal(70, 8, n).round(1).tolist()}
        if i in (3, 9, 14):
            del rows["weight"]
        bodies.append(rows)
    answers: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        start.wait()
        answers[i] = server.post(bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for body, answer in zip(bodies, answers):
        if "weight" not in body:
            assert answer.status_code == 422 and "'weight'" in answer.json()["detail"]
            continue
        assert answer.status_code == 200, answer.text
        assert_same(pd.DataFrame(answer.json()["predictions"]), predictors["linear"].predict(body))
        unseen = "pink" in body["colour"]
        assert any("'pink'" in w for w in answer.json()["warnings"]) == unseen


def worker_api(checkpoint: Path, max_batch_size: int):
    """The server's API set up in this process as in a worker, whose Ctrl-C and thread settings it keeps."""
    from lit_regression.serve import RegressionAPI

    api = RegressionAPI(str(checkpoint), None, 1, max_batch_size=max_batch_size, batch_timeout=0.0)
    threads = torch.get_num_threads()
    api.pre_setup()  # as LitServer does
    api.setup("cpu")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(threads)
    return api


def test_a_bad_request_in_a_batch_leaves_the_others_alone(checkpoints, predictors):
    """The API's steps as LitServe's batched loop calls them, in this process: one pass for the good requests, a
    refusal for the bad one."""
    api = worker_api(checkpoints["logistic"], max_batch_size=8)
    requests_ = [RECORDS, {"order id": "x", "colour": "red"}, RECORDS[0], "rows"]
    outputs = api.unbatch(api.predict(api.batch([api.decode_request(r) for r in requests_])))
    answers = [api.encode_response(o) for o in outputs]
    assert [a.status_code for a in answers] == [200, 422, 200, 400]
    first, third = (pd.DataFrame(json.loads(answers[i].body)["predictions"]) for i in (0, 2))
    assert_same(first, predictors["logistic"].predict(columns(RECORDS)))
    assert_same(third, predictors["logistic"].predict(RECORDS[0]))
    assert "'Größe (cm)'" in json.loads(answers[1].body)["detail"]


def test_requests_of_a_batch_are_encoded_together_and_answered_apart(checkpoints, predictors, monkeypatch):
    """Requests with the same columns are encoded as one table (one call of the predictor's encode for three
    clean requests), each keeping its own ids and predictions; a request whose rows warn is encoded again alone, so
    its warning, with its own row, is in its answer only."""
    api = worker_api(checkpoints["linear"], max_batch_size=8)
    calls = []
    encode = api.predictor.encode
    monkeypatch.setattr(api.predictor, "encode", lambda rows: calls.append(rows) or encode(rows))
    clean = [[RECORDS[0]], [{**RECORDS[2], "order id": "B7"}, RECORDS[0]], columns([RECORDS[2]])]
    outputs = api.unbatch(api.predict(api.batch([api.decode_request(r) for r in clean])))
    assert len(calls) == 1
    for body, output in zip(clean, outputs):
        answer = json.loads(api.encode_response(output).body)
        assert_same(pd.DataFrame(answer["predictions"]), predictors["linear"].predict(body))
        assert answer["warnings"] == []
    calls.clear()
    mixed = [[RECORDS[0]], [RECORDS[2], RECORDS[1]]]  # the second's second row has an unseen colour
    answers = [json.loads(api.encode_response(o).body)
               for o in api.unbatch(api.predict(api.batch([api.decode_request(r) for r in mixed])))]
    assert len(calls) == 3  # together, then each alone
    assert answers[0]["warnings"] == [] and len(answers[1]["warnings"]) == 1
    assert UNSEEN in answers[1]["warnings"][0] and "the first at row 1;" in answers[1]["warnings"][0]
    assert_same(pd.DataFrame(answers[1]["predictions"]), predictors["linear"].predict([RECORDS[2], RECORDS[1]]))


def test_a_model_without_a_table_takes_rows_of_numbers(tmp_path):
    """A model of the seed datamodules: a list of rows of numbers, the inputs beside the predictions."""
    fit_config("line_linear.yaml", tmp_path, "--trainer.max_epochs", "2", "--trainer.enable_model_summary", "false")
    ckpt = versions(tmp_path)[0] / "checkpoints" / "last.ckpt"
    api = worker_api(ckpt, max_batch_size=1)  # one request a pass: LitServe's loop without batches
    answers = [api.encode_response(api.predict(api.decode_request(r))) for r in ([[1.0], [2.5]], [["a"]], {"x": 1})]
    assert [a.status_code for a in answers] == [200, 422, 400]
    assert_same(pd.DataFrame(json.loads(answers[0].body)["predictions"]),
                lit_regression.load(ckpt).predict([[1.0], [2.5]]))


def test_onnx_answers_equal_torch(servers):
    rng = np.random.default_rng(2)
    n = 50
    rows = {"order id": [str(i) for i in range(n)], "Größe (cm)": rng.normal(170, 10, n).tolist(),
            "colour": rng.choice(["red", "green", "blue", "pink"], n).tolist(), "weight": rng.normal(70, 8, n).tolist()}
    rows["Größe (cm)"][7] = None
    from_onnx, onnx_warnings = servers["onnx"].predictions(rows)
    from_torch, torch_warnings = servers["logistic"].predictions(rows)
    assert_same(from_onnx, from_torch)
    assert onnx_warnings == torch_warnings and "onnxruntime" in servers["onnx"].out.read_text()


def one_line_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *map(str, args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_refusals_before_serving(checkpoints, capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(capsys, "--ckpt_path", checkpoints["linear"], "--port", port)
    assert line.startswith("lit-regression: error: 127.0.0.1:") and f":{port} is not free" in line and "--port" in line
    line = one_line_error(capsys, "--ckpt_path", tmp_path / "nothing.ckpt")
    assert "nothing.ckpt" in line
    for setting, value in (("max_batch_size", "0"), ("workers", "0"), ("batch_timeout", "-1"),
                           ("max_request_mb", "0"), ("port", "80"), ("host", "10.0.0.1")):
        line = one_line_error(capsys, "--ckpt_path", checkpoints["linear"], f"--{setting}", value)
        assert f"{setting}=" in line, line


def test_port_in_use_exits_2_from_the_command_line(checkpoints):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*CLI, "serve", "--ckpt_path", str(checkpoints["linear"]), "--port", str(port)],
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"lit-regression: error: 127.0.0.1:{port} is not free (Address already in use): give another --port"]


# --- last: these stop the module's servers ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "signum", "group"), [("linear", signal.SIGTERM, False),
                                                       ("logistic", signal.SIGINT, True),
                                                       ("onnx", signal.SIGINT, False)])
def test_a_signal_stops_the_server_cleanly(servers, name, signum, group):
    server = servers[name]
    assert server.post(RECORDS).ok
    status, seconds, under = server.stop(signum, group)
    assert status == 0 and seconds < STOP_S, (status, seconds)
    assert len(under) >= 3  # HTTP server, worker(s), manager
    deadline = time.monotonic() + 3  # multiprocessing's resource tracker ends once it sees the server's end
    while [pid for pid in under if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {pid: command(pid) for pid in under if alive(pid)}
    errors = server.err.read_text()
    assert "Traceback" not in errors and " - ERROR - " not in errors and " - WARNING - " not in errors, errors
    assert server.out.read_text().splitlines()[-1] == "stopped"
    with socket.socket() as probe:  # the port is free again for a new server, which binds as uvicorn does:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections the server closed linger in
        probe.bind(("127.0.0.1", server.port))  # TIME_WAIT for a minute; only a listening socket refuses this


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_server_starts_stops_it(checkpoints, tmp_path, signum):
    """Ctrl-C to the process group, or SIGTERM, while the workers are being started and import torch: the command
    ends with status 0 and no traceback, and leaves no process behind."""
    server = Server(checkpoints["linear"], folder=tmp_path)
    deadline = time.monotonic() + READY_S
    while "curl" not in server.out.read_text() and time.monotonic() < deadline:  # the workers are started next
        time.sleep(0.05)
    time.sleep(0.5)
    under = descendants(server.process.pid)
    status, seconds, _ = server.stop(signum, group=signum == signal.SIGINT)
    assert status == 0 and seconds < STOP_S, (status, seconds, server.err.read_text())
    deadline = time.monotonic() + 3
    while [pid for pid in under if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {pid: command(pid) for pid in under if alive(pid)}
    assert "Traceback" not in server.err.read_text() + server.out.read_text()
    assert server.out.read_text().splitlines()[-1] == "stopped"
