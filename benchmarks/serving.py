"""Figure 9 of ``benchmarks/run.py``: ``lit-regression serve`` under load, and onnxruntime against torch.

*Serving*: requests per second and p50/p99 latency of ``lit-regression serve`` (LitServe; ``POST /predict`` takes
JSON rows in their raw columns, ``Predictor`` encodes them: checks, imputation, one-hot) at 64 concurrent clients,
one row per request, against a bare LitServe server of the same torch model (``bare``, below: a small ``LitAPI``
that takes the row already encoded, ``Predictor.inputs`` computed by the client beforehand, as a JSON list of
floats), with the same batching (``max_batch_size``, ``batch_timeout``) and worker count. Each server is its own
process (started with its own session, so SIGTERM reaches LitServe's workers too), both are up at once and idle
while the other is measured; the client (asyncio and aiohttp, 64 tasks sharing one connection pool, the request
bodies serialised beforehand) sends the same number of requests to each, after a warm-up, the servers taking
turns. A third server answers a fixed body without any work (``null``: aiohttp alone): what the client reaches
when the server costs nothing, to show that the client is not the bottleneck.

*onnxruntime against torch*: the numeric path (``onnx_export.numeric_onnx``: encoded float inputs to what
``predict`` returns) in an ``onnxruntime.InferenceSession`` against ``model.predict_outputs(model(x))`` under
``torch.inference_mode()`` on 1 and 10,000 encoded rows; and the whole exported graph (``onnx_export.onnx_model``:
raw columns in) against ``Predictor.predict`` on the same rows as a pandas DataFrame.

Run on its own: ``.venv/bin/python benchmarks/serving.py [--requests N] [--reps N]``; the servers:
``serving.py bare --ckpt CKPT --port P ...`` and ``serving.py null --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "insurance.yaml"
TABLE = ROOT / "examples" / "data" / "insurance.csv"
TARGET = "charges"
CLIENTS = 64
MAX_BATCH_SIZE, BATCH_TIMEOUT, WORKERS = 64, 0.005, 1  # the same for both servers
BIG = 10_000  # rows of the large onnxruntime batch
STARTUP_S = 120  # a server that is not healthy by then fails the figure
JSON = {"Content-Type": "application/json"}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


# --- the model and the rows -------------------------------------------------------------------------------------
def make_checkpoint(root: str) -> str:
    """Train ``configs/insurance.yaml`` (Newton's method: 2 epochs) through the CLI in this process; its
    ``last.ckpt``."""
    from lit_regression.cli import LitRegressionCLI

    args = ["fit", "--config", str(CONFIG), "--data.init_args.path", str(TABLE), "--trainer.default_root_dir", root,
            "--plots.enabled", "false", "--predictions.enabled", "false", "--report.enabled", "false",
            "--trainer.enable_progress_bar", "false"]
    with contextlib.redirect_stdout(io.StringIO()):
        LitRegressionCLI(args=args)
    found = sorted(Path(root).rglob("last.ckpt"))
    if not found:
        raise RuntimeError(f"no last.ckpt under {root}")
    return str(found[-1])


def records() -> list[dict]:
    """The rows of ``examples/data/insurance.csv`` without the target, as JSON records (an empty cell is
    ``null``; the id column is kept, as ``new_policies.csv`` has it)."""
    import pyarrow.csv as pc

    table = pc.read_csv(TABLE, convert_options=pc.ConvertOptions(strings_can_be_null=True))
    return table.drop([TARGET]).to_pylist()


# --- the servers ------------------------------------------------------------------------------------------------
if __name__ in ("__main__", "__mp_main__"):  # the server's processes only: LitServe's workers unpickle the API
    import litserve as ls  # by its module's name, which spawn gives them back as __mp_main__
    import torch

    class BareAPI(ls.LitAPI):
        """The reference: the same torch model behind LitServe, taking one encoded row (a JSON list of floats)."""

        def __init__(self, ckpt: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self.ckpt = ckpt

        def setup(self, device):
            import lit_regression

            self.model = lit_regression.load(self.ckpt).model

        def decode_request(self, request):
            return torch.tensor(request, dtype=torch.float32)

        def batch(self, inputs):
            return torch.stack(inputs)

        def predict(self, x):
            with torch.inference_mode():
                return self.model.predict_outputs(self.model(x))

        def unbatch(self, output):
            return output.tolist()

        def encode_response(self, output):
            return {"predictions": output}


def serve_bare(args: argparse.Namespace) -> None:
    import litserve as ls

    api = BareAPI(args.ckpt, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


def serve_null(args: argparse.Namespace) -> None:
    """What an HTTP server that does no work answers at: a fixed body, aiohttp's own server."""
    from aiohttp import web

    body = json.dumps({"predictions": [{TARGET: 0.0}], "warnings": []}).encode()

    async def predict(request):
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def health(request):
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.post("/predict", predict), web.get("/health", health)])
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lit_regression_cli() -> list[str]:
    script = Path(sys.executable).parent / "lit-regression"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lit_regression"]


def ours_command(ckpt: str, port: int, workers: int = WORKERS) -> list[str]:
    return [*lit_regression_cli(), "serve", "--ckpt_path", ckpt, "--host", "127.0.0.1", "--port", str(port),
            "--max_batch_size", str(MAX_BATCH_SIZE), "--batch_timeout", str(BATCH_TIMEOUT), "--workers", str(workers)]


def bare_command(ckpt: str, port: int, workers: int = WORKERS) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "bare", "--ckpt", ckpt, "--port", str(port),
            "--max_batch_size", str(MAX_BATCH_SIZE), "--batch_timeout", str(BATCH_TIMEOUT), "--workers", str(workers)]


def null_command(port: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "null", "--port", str(port)]


class Server:
    """A server process in its own session (LitServe's workers with it), its output in a log file; ``stop``
    sends SIGTERM to the whole session, waits, and kills what is left."""

    def __init__(self, name: str, command: Callable[[int], list[str]], folder: str) -> None:
        self.name, self.port = name, free_port()
        self.command = command(self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(folder) / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, cwd=folder, env=env,
                                        start_new_session=True)

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_healthy(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited ({self.process.returncode}) before it was healthy: "
                                   f"{' '.join(self.command)}\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server not healthy after {STARTUP_S}s\n{self.tail()}")
            time.sleep(0.2)

    def _signal(self, sig: int) -> bool:
        """Send ``sig`` to the server's session; False when nothing of it is left."""
        try:
            os.killpg(self.process.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the server's main process and a wait for it (``lit-regression serve`` stops its workers
        itself); then SIGTERM to whatever is left of its session (a bare LitServer leaves its workers), a wait,
        and SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        if self._signal(signal.SIGTERM):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._signal(0):
                time.sleep(0.1)
            self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.log.close()


# --- the client -------------------------------------------------------------------------------------------------
async def _load(url: str, bodies: list[bytes], requests: int, clients: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    failures: list[str] = []
    sent = 0
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            nonlocal sent
            while sent < requests:
                body = bodies[sent % len(bodies)]
                sent += 1
                start = time.perf_counter()
                async with session.post(url, data=body, headers=JSON) as answer:
                    text = await answer.read()
                    if answer.status != 200:
                        failures.append(f"{answer.status}: {text[:300]!r}")
                latencies.append(time.perf_counter() - start)

        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"requests": requests, "seconds": seconds, "rps": requests / seconds,
            "p50_ms": 1e3 * percentile(latencies, 0.50), "p99_ms": 1e3 * percentile(latencies, 0.99),
            "client_cpu_s": cpu, "failures": len(failures), "first_failure": failures[0] if failures else None}


def load(url: str, bodies: list[bytes], requests: int, clients: int = CLIENTS) -> dict:
    """``requests`` POSTs of ``bodies`` (in turn) to ``url`` from ``clients`` concurrent clients, each sending its
    next request when its answer is in: requests/s, p50 and p99 latency (ms), the client's CPU seconds."""
    try:
        import uvloop

        return uvloop.run(_load(url, bodies, requests, clients))
    except ImportError:
        return asyncio.run(_load(url, bodies, requests, clients))


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, data=body, headers=JSON, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


# --- onnxruntime against torch ----------------------------------------------------------------------------------
def timed_alternately(sides: dict[str, Callable[[], object]], calls: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each side: ``reps`` blocks of ``calls`` calls each (the median call of a block), the
    sides taking turns block by block, the order rotated each repetition."""
    names, result = list(sides), {name: [] for name in sides}
    for name in names:  # warm-up
        for _ in range(3):
            sides[name]()
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            fn, times = sides[name], []
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            result[name].append(median(times))
    return result


def onnx_vs_torch(ckpt: str, reps: int, calls_small: int, calls_big: int, seed: int = 0) -> dict:
    """The numeric path and the whole graph in onnxruntime against torch and ``Predictor.predict``, on 1 and
    ``BIG`` rows of ``examples/data/insurance.csv`` (drawn with replacement)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    import lit_regression
    from lit_regression import onnx_export

    predictor = lit_regression.load(ckpt)
    model = predictor.model
    options = ort.SessionOptions()
    options.log_severity_level = 3
    numeric = ort.InferenceSession(onnx_export.numeric_onnx(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    whole = ort.InferenceSession(onnx_export.onnx_model(predictor).SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
    table = records()
    import pandas as pd

    frame = pd.DataFrame(table)
    rng = np.random.default_rng(seed)
    kinds = {i.name: i.type for i in whole.get_inputs()}

    def feeds(df: pd.DataFrame) -> dict:
        out = {}
        for name, kind in kinds.items():
            column = df[name]
            if kind == "tensor(string)":
                out[name] = column.astype(object).where(column.notna(), "").astype(str).to_numpy(object)[:, None]
            else:
                out[name] = column.to_numpy(np.float32, na_value=np.nan)[:, None]
        return out

    result: dict = {"torch_threads": torch.get_num_threads(),
                    "onnxruntime_threads": "default (one per physical core)", "rows": {}}
    for rows in (1, BIG):
        df = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
        x = predictor.inputs(df)
        xn = x.numpy()

        def torch_numeric(x=x):
            with torch.inference_mode():
                return model.predict_outputs(model(x))

        def onnx_numeric(xn=xn):
            return numeric.run(None, {onnx_export.FEATURES: xn})[0]

        def torch_whole(df=df):
            return predictor.predict(df)

        def onnx_whole(df=df):
            return whole.run(None, feeds(df))

        expected = torch_numeric().numpy()
        if not np.allclose(onnx_numeric(), expected, rtol=1e-4, atol=1e-3):
            raise RuntimeError("onnxruntime's numeric path disagrees with torch's")
        if not np.allclose(onnx_whole()[0], torch_whole()[TARGET].to_numpy(), rtol=1e-4, atol=1e-2):
            raise RuntimeError("onnxruntime's whole graph disagrees with Predictor.predict")
        calls = calls_small if rows == 1 else calls_big
        numeric_s = timed_alternately({"torch": torch_numeric, "onnxruntime": onnx_numeric}, calls, reps)
        whole_s = timed_alternately({"predict": torch_whole, "onnxruntime": onnx_whole},
                                    max(3, calls // 4) if rows == 1 else max(3, calls // 2), reps)
        result["rows"][rows] = {
            "numeric_s": numeric_s, "whole_s": whole_s,
            "numeric_ratio": median([a / b for a, b in zip(numeric_s["torch"], numeric_s["onnxruntime"])]),
            "whole_ratio": median([a / b for a, b in zip(whole_s["predict"], whole_s["onnxruntime"])])}
    return result


# --- the figure -------------------------------------------------------------------------------------------------
def measure(requests: int = 2000, reps: int = 3, warmup: int = 300, onnx_reps: int = 5,
            ours: Callable[[str, int], list[str]] = ours_command) -> dict:
    """The whole figure: a checkpoint, the three servers, ``reps`` rounds of ``requests`` requests to each (the
    order rotated), then onnxruntime against torch with the servers stopped."""
    import shutil

    import pandas as pd

    import lit_regression

    folder = tempfile.mkdtemp(prefix="bench_serving_")
    try:
        ckpt = make_checkpoint(folder)
        rows = records()
        encoded = lit_regression.load(ckpt).inputs(pd.DataFrame(rows)).tolist()
        bodies = {"ours": [json.dumps([row]).encode() for row in rows],
                  "bare": [json.dumps(x).encode() for x in encoded]}
        bodies["null"] = bodies["ours"]
        runs, logs, sessions = _serve_and_load(ckpt, folder, bodies, requests, reps, warmup, ours)
        onnx = onnx_vs_torch(ckpt, onnx_reps, calls_small=200, calls_big=50)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary = {name: {"rps": median([r["rps"] for r in rs]), "p50_ms": median([r["p50_ms"] for r in rs]),
                      "p99_ms": median([r["p99_ms"] for r in rs]),
                      "client_cpu_per_s": median([r["client_cpu_s"] / r["seconds"] for r in rs]),
                      "failures": sum(r["failures"] for r in rs),
                      "first_failure": next((r["first_failure"] for r in rs if r["first_failure"]), None)}
               for name, rs in runs.items()}
    return {"clients": CLIENTS, "requests": requests, "reps": reps, "warmup": warmup,
            "max_batch_size": MAX_BATCH_SIZE, "batch_timeout": BATCH_TIMEOUT, "workers": WORKERS,
            "ratio": median([a["rps"] / b["rps"] for a, b in zip(runs["ours"], runs["bare"])]),
            "summary": summary, "runs": runs, "onnx": onnx, "server_logs": logs, "server_sessions": sessions}


def _serve_and_load(ckpt: str, folder: str, bodies: dict[str, list[bytes]], requests: int, reps: int, warmup: int,
                    ours: Callable[[str, int], list[str]]) -> tuple[dict, dict, dict]:
    """Start the three servers, check that ours and the bare one agree, warm each up, then ``reps`` rounds of
    ``requests`` requests to each, the order rotated; the servers are stopped whatever happens. The runs, the
    end of each server's log, and each server's session (its process group, gone once stopped)."""
    servers: list[Server] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        for name, command in (("ours", lambda port: ours(ckpt, port)), ("bare", lambda port: bare_command(ckpt, port)),
                              ("null", null_command)):
            servers.append(Server(name, command, folder))
        for server in servers:
            server.wait_healthy(deadline)
        by_name = {server.name: server for server in servers}
        # the same model: both answer complete rows alike (ours in named columns)
        complete = [i for i, body in enumerate(bodies["ours"]) if b"null" not in body][:3]
        for i in complete:
            a = post(by_name["ours"].url + "/predict", bodies["ours"][i])["predictions"][0][TARGET]
            b = post(by_name["bare"].url + "/predict", bodies["bare"][i])["predictions"][0]
            if abs(a - b) > 1e-3 * max(1.0, abs(b)):
                raise RuntimeError(f"row {i}: the servers disagree, {a} and {b}")
        runs: dict[str, list[dict]] = {name: [] for name in by_name}
        for name, server in by_name.items():
            load(server.url + "/predict", bodies[name], warmup)
        names = list(by_name)
        for rep in range(reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                run = load(by_name[name].url + "/predict", bodies[name], requests)
                if run["failures"] > requests // 2:  # a broken server; a few failures are counted and reported
                    raise RuntimeError(f"{name}: {run['failures']} of {requests} requests failed, the first "
                                       f"{run['first_failure']}\n{by_name[name].tail()}")
                runs[name].append(run)
    finally:
        for server in servers:
            server.stop()
    return (runs, {server.name: server.tail(600) for server in servers},
            {server.name: server.process.pid for server in servers})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    bare = sub.add_parser("bare", help="the reference server: the same torch model, encoded inputs")
    bare.add_argument("--ckpt", required=True)
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--max_batch_size", type=int, default=MAX_BATCH_SIZE)
    bare.add_argument("--batch_timeout", type=float, default=BATCH_TIMEOUT)
    bare.add_argument("--workers", type=int, default=WORKERS)
    null = sub.add_parser("null", help="a server that answers a fixed body (the client's ceiling)")
    null.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "bare":
        serve_bare(args)
    elif args.command == "null":
        serve_null(args)
    else:
        result = measure(args.requests, args.reps)
        result.pop("server_logs")
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2, default=str))


if __name__ == "__main__":
    main()
