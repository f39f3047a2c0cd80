"""``lit-regression serve``: a checkpoint's model and preprocessing behind HTTP, with LitServe.

::

    lit-regression serve --ckpt_path last                  # http://127.0.0.1:8000, the newest run under runs/
    lit-regression serve --ckpt_path RUN/checkpoints/last.ckpt --port 8080 --onnx

    curl -s http://127.0.0.1:8000/predict -H 'Content-Type: application/json' \\
         -d '[{"order id": "A17", "age": 41, "city": "Lyon"}, {"order id": "A18", "age": null, "city": "Paris"}]'

``POST /predict`` takes JSON rows in one of three shapes:

- a list of records, ``[{"age": 41, "city": "Lyon"}, ...]`` (a key a record lacks is an empty cell);
- a dict of columns, ``{"age": [41, 30], "city": ["Lyon", "Paris"]}``;
- one record of single values, ``{"age": 41, "city": "Lyon"}`` (one row).

``null`` is an empty cell. A model trained without a table takes a list of rows of numbers, ``[[0.5, 1.2], ...]``.
The rows get the checks, imputation and category encoding of ``lit_regression.load(ckpt).predict(rows)`` (the
same code), and the answer holds what it returns, row by row::

    {"predictions": [{"row": 0, "order id": "A17", "price": 12.5}, ...], "warnings": ["column 'city' has ..."]}

``row`` counts the request's rows from 0; then come the id column (or the feature columns as given) and the
prediction in the target's units, or for a classifier the label and ``prob_<label>`` per class. ``warnings`` holds
the lines ``predict`` would print for these rows (a category not seen in training, encoded as all zeros; a column
the model does not use).

Requests that wait together (up to ``max_batch_size``, within ``batch_timeout``) go through the model in one pass;
each is checked and answered on its own, so a bad request never fails the good ones beside it. An error is one
line of JSON, ``{"detail": "..."}``, with the status:

- **400**: the body is empty, not JSON, or not rows in one of the shapes above, or has no rows;
- **413**: the body is larger than ``--max_request_mb`` (refused from its ``Content-Length``, or as soon as a
  chunked body passes the limit, without reading the rest);
- **422**: rows the model cannot take: a missing column, text in a numeric column, an empty cell of a column
  that is not imputed (the message names the column and the value);
- **500**: a fault of the server (its traceback is on the server's console).

``GET /health`` answers 503 until every worker has loaded the model, then 200.

The console says what is served, how, and a ``curl`` line with a row the model takes; ``ready`` once a worker has
loaded the model; then one line for each answer with an error status (LitServe's and uvicorn's own lines are
left to warnings and errors). SIGTERM or Ctrl-C stops the server within a few seconds: the HTTP server gives the
requests in progress up to :data:`GRACE_S` seconds, the workers end, the port is freed, and the command prints
``stopped`` and exits with status 0, a stop asked for being a server's normal end. A checkpoint that is missing, a
port in use or a bad setting is one ``lit-regression: error:`` line and status 2, before anything starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from queue import Empty
from typing import Any

import litserve as ls
import torch
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType, WorkerSetupStatus
from starlette.responses import Response

from lit_regression.errors import InputError, count, heard, write_line
from lit_regression.predictor import Encoded, Predictor, columns_of, load

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the addresses LitServe 0.2 listens on
GRACE_S = 5  # seconds the HTTP server waits for requests in progress when stopped (LitServe's default is 30)
SHOWN_ERROR = 300  # characters of an error answer written on the console


def serve(ckpt_path: str, host: str = "127.0.0.1", port: int = 8000, onnx: bool = False, max_batch_size: int = 64,
          batch_timeout: float = 0.0, workers: int = 1, max_request_mb: float = 4.0, root: str = "runs") -> None:
    """Answer ``POST /predict`` with the predictions of a checkpoint's model, until SIGTERM or Ctrl-C.

    Args:
        ckpt_path: the checkpoint: its file, or ``last`` (the newest ``last.ckpt`` under ``root``) or ``best``.
        host: the address to listen on: ``127.0.0.1`` or ``localhost`` (this machine only), ``0.0.0.0`` or ``::``
            (every network).
        port: the TCP port, 1024 to 65535.
        onnx: run the model's numeric part in onnxruntime instead of torch (the preprocessing stays the same).
        max_batch_size: the most requests that go through the model in one pass.
        batch_timeout: seconds a pass waits for more requests after its first. 0 waits for none, and the
            requests that arrive while a pass runs still share the next one: on 2 CPU cores, with a small model,
            one row is answered in 3.5 ms (median) instead of 9.8 ms with 5 ms, and 8 clients get 397 requests/s
            instead of 356. A wait pays where one pass over many rows costs much less than many passes.
        workers: processes that each hold the model and answer requests (and as many HTTP server processes).
        max_request_mb: the largest request body, in MB (10**6 bytes); a larger one gets 413.
        root: the folder where ``last`` and ``best`` are looked for.
    """
    host = "127.0.0.1" if host == "localhost" else host  # LitServe takes the address, not the name
    _check_settings(host, port, max_batch_size, batch_timeout, workers, max_request_mb)
    try:
        _serve(ckpt_path, host, port, onnx, max_batch_size, batch_timeout, workers, max_request_mb, root)
    except KeyboardInterrupt:  # Ctrl-C while loading, or a stop before the workers were ready (_stop_on_signals)
        pass
    print("stopped", flush=True)


def _serve(ckpt_path: str, host: str, port: int, onnx: bool, max_batch_size: int, batch_timeout: float, workers: int,
           max_request_mb: float, root: str) -> None:
    predictor = load(ckpt_path, root)  # a missing or foreign checkpoint fails here, in one line
    checkpoint = os.path.abspath(predictor.checkpoint)
    _check_port(host, port)
    numeric = _numeric_onnx(predictor) if onnx else None
    api = RegressionAPI(checkpoint, numeric, workers, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = _Server(api, workers_per_device=workers, accelerator="cpu",
                     middlewares=[(BodyCheck, {"max_bytes": int(max_request_mb * 1e6)})])
    server.uvicorn_graceful_timeout = GRACE_S
    # Ctrl-C reaches the HTTP servers too, which then stop before LitServe stops them; it says so, at no use
    logging.getLogger("litserve.server").addFilter(lambda record: "Already not alive" not in record.getMessage())
    _stop_on_signals(server)
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else '[::1]' if host == '::' else host}:{port}"
    print(f"serving {predictor!r}", flush=True)
    print(f"  model pass in {'onnxruntime' if onnx else 'torch'}, {count(workers, 'worker')}, up to "
          f"{count(max_batch_size, 'request')} a pass (batch_timeout {batch_timeout:g} s), bodies up to "
          f"{max_request_mb:g} MB", flush=True)
    print(f"  curl -s {url}/predict -H 'Content-Type: application/json' -d '{_example(predictor)}'", flush=True)
    # the processes LitServe starts now (its manager, the workers) inherit an ignored Ctrl-C, so that a Ctrl-C to
    # the terminal's process group while they import torch cannot end them with a traceback: this process stops
    # them in order. Its own handler is back once they are started (_Server.verify_worker_status).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.run(host=host, port=port, log_level="warning", generate_client_file=False)


def _check_settings(host: str, port: int, max_batch_size: int, batch_timeout: float, workers: int,
                    max_request_mb: float) -> None:
    if host not in HOSTS:
        raise InputError(f"host={host!r} is invalid: expected one of {', '.join(HOSTS)} or localhost (LitServe "
                         "listens on these)")
    if not 1024 <= port <= 65535:
        raise InputError(f"port={port!r} is invalid: expected 1024 to 65535")
    if max_batch_size < 1:
        raise InputError(f"max_batch_size={max_batch_size!r} is invalid: expected at least 1")
    if not batch_timeout >= 0:  # NaN too
        raise InputError(f"batch_timeout={batch_timeout!r} is invalid: expected 0 or more seconds")
    if workers < 1:
        raise InputError(f"workers={workers!r} is invalid: expected at least 1")
    if not max_request_mb > 0:
        raise InputError(f"max_request_mb={max_request_mb!r} is invalid: expected more than 0")


def _check_port(host: str, port: int) -> None:
    """Refuse a port that another program holds now, with the way out, rather than let uvicorn exit in the
    middle of LitServe's start (the port may still be taken in between: then LitServe's own error shows)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed port is free
        try:
            probe.bind((host, port))
        except OSError as err:
            raise InputError(f"{host}:{port} is not free ({err.strerror}): give another --port") from None


def _numeric_onnx(predictor: Predictor) -> bytes:
    """The model's numeric path as ONNX, exported once here rather than in every worker."""
    from lit_regression.onnx_export import numeric_onnx

    return numeric_onnx(predictor.model).SerializeToString()


def _example(predictor: Predictor) -> str:
    """One row the model takes, as JSON for the curl line: the id column, each category's first level, each
    number's fill value (or 0)."""
    dm = predictor.datamodule
    if not hasattr(dm, "predict_rows"):
        return json.dumps([[0.0] * int(predictor.model.hparams.n_features)])
    state = dm.fit_preprocessing()
    row: dict[str, Any] = {}
    if dm.hparams.id_column is not None:
        row[str(dm.hparams.id_column)] = "1"
    for feature in state.features:
        levels, fill = state.categories.get(feature), state.fill.get(feature)
        value = levels[0] if levels is not None else (0.0 if fill is None else round(float(fill), 3))
        row[str(feature)] = value.item() if hasattr(value, "item") else value
    return json.dumps([row], ensure_ascii=False, default=str).replace("'", "'\\''")


class _Server(ls.LitServer):
    """LitServer that says when the first worker is ready, and stops waiting for one where a signal asks it to stop
    or a worker ends or fails before it is ready (it then stops the others, and says so in one line).

    LitServe 0.2 waits for its workers in ``verify_worker_status``, which loops until one reports ready or an
    error: a worker that ended without a word (a Ctrl-C to the terminal's process group while it imports torch)
    or a stop asked for meanwhile kept it waiting for ever. This is that wait, with those two ways out."""

    stopping: threading.Event  # set by the signal handlers of _stop_on_signals
    on_signal: Any  # their handler

    def verify_worker_status(self) -> None:
        signal.signal(signal.SIGINT, self.on_signal)  # the workers are started: Ctrl-C stops the server again
        while True:
            try:
                states = list(self.workers_setup_status.values())
            except (EOFError, OSError):  # the manager process has ended (a signal to the process group)
                states = None
            if states is not None and WorkerSetupStatus.READY in states:
                break
            failed = states is not None and WorkerSetupStatus.ERROR in states
            ended = [w for w in self.inference_workers if not w.is_alive()]
            if self.stopping.is_set() or failed or ended or states is None:
                for worker in self.inference_workers:
                    worker.terminate()
                if self.stopping.is_set():
                    raise KeyboardInterrupt
                raise InputError("a worker could not load the model: its error is above" if failed else
                                 "a worker ended before it loaded the model: its error, if any, is above")
            time.sleep(0.05)
        print("ready (stop with Ctrl-C)", flush=True)


def _stop_on_signals(server: _Server) -> None:
    """SIGTERM and Ctrl-C end ``server.run`` as its own shutdown event does: the HTTP server and the workers are
    stopped in order and the port freed (by default SIGTERM would end this process alone and leave them running).
    Before the workers are ready, they end the wait for them (see :class:`_Server`); before anything started,
    they end the command.

    The event is a multiprocessing manager's, and this thread's connection to the manager is busy with
    ``run``'s wait for it, so another thread sets it. The HTTP server is a fork of this process: it handles the
    signal itself and, done, raises it again into this handler, where it is ignored."""
    main = os.getpid()
    server.stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main:
            return
        server.stopping.set()
        if server._shutdown_event is None:  # nothing started yet
            raise KeyboardInterrupt
        threading.Thread(target=_set, args=(server._shutdown_event,), daemon=True).start()

    server.on_signal = stop
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def _set(event: Any) -> None:
    """Set a manager's event; a manager that has ended (a signal to the whole process group) has nothing to set."""
    try:
        event.set()
    except (EOFError, OSError):
        pass


# --- in each worker -----------------------------------------------------------------------------------------------
class Refusal(Exception):
    """A request that gets no predictions: the HTTP status and the one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Pending:
    """A request's rows, read from its JSON, not yet encoded: ``columns`` (a dict of columns, or for a model without
    a table the list of rows) and ``rows``, their number where every column is a list of that length (``None``:
    the request is encoded on its own, which says what is wrong with it)."""

    columns: Any
    rows: int | None


@dataclass
class Rows:
    """A request's rows, encoded, with the warnings their encoding gave."""

    encoded: Encoded
    warnings: list[str]


class RegressionAPI(ls.LitAPI):
    """The LitServe API of a checkpoint: ``decode_request`` reads each request's rows, ``predict`` checks and
    encodes the rows of the whole batch with the checkpoint's :class:`~lit_regression.predictor.Predictor` and runs
    the model once on them, ``encode_response`` builds each request's table of predictions.

    Encoding costs about 2 ms a call whatever the rows (scikit-learn's checks of each category column), where the
    model takes microseconds: the requests of a batch that name the same columns are encoded as one table. Where
    that table is refused or warns, each of its requests is encoded again on its own, so that its answer names its
    own problem and rows.

    LitServe's batched loop answers every request of a batch with the error of any one that raises, so a bad
    request is not raised but carried through as a :class:`Refusal` and answered with its own status.

    Args:
        checkpoint: the checkpoint's file.
        numeric_onnx: the model's numeric path as a serialized ONNX model, to run in onnxruntime; ``None``: torch.
        workers: the worker processes, which share the machine's cores.
        max_batch_size: see :func:`serve`.
        batch_timeout: see :func:`serve`.
    """

    def __init__(self, checkpoint: str, numeric_onnx: bytes | None, workers: int, max_batch_size: int,
                 batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         loop=_WaitingLoop() if max_batch_size > 1 else "auto")
        self.checkpoint = checkpoint
        self.numeric_onnx = numeric_onnx
        self.workers = workers

    def setup(self, device: str) -> None:
        # Ctrl-C reaches every process of the terminal: the main process stops the workers in order
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        torch.set_num_threads(threads)
        self.predictor = load(self.checkpoint)
        self.session = None
        if self.numeric_onnx is not None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = onnxruntime.InferenceSession(self.numeric_onnx, options,
                                                        providers=["CPUExecutionProvider"])
            numeric = self.session.get_inputs()[0]  # onnx_export.numeric_onnx's one input
            self.onnx_input = (numeric.name, "float64" if numeric.type == "tensor(double)" else "float32")

    def decode_request(self, request):  # unannotated: LitServe reads the annotation as the body's type
        """The request's rows (``Pending``), or why they are refused (a ``Refusal``, never raised: see the
        class)."""
        try:
            return _rows(request, table=hasattr(self.predictor.datamodule, "predict_rows"))
        except Refusal as refusal:
            return refusal

    def predict(self, batch: Any) -> Any:
        """Each request's rows encoded, and the model's outputs for them, from one pass over them all (with
        ``max_batch_size`` 1, LitServe hands over one request, not a list)."""
        requests = batch if self.max_batch_size > 1 else [batch]
        encoded = iter(self._encode([r for r in requests if isinstance(r, Pending)]))
        requests = [next(encoded) if isinstance(r, Pending) else r for r in requests]
        rows = [r for r in requests if isinstance(r, Rows)]
        if rows:
            outputs = iter(torch.split(self._outputs(torch.cat([r.encoded.x for r in rows])),
                                       [len(r.encoded.x) for r in rows]))
        answers = [(r, next(outputs)) if isinstance(r, Rows) else r for r in requests]
        return answers if self.max_batch_size > 1 else answers[0]

    def _encode(self, pending: list[Pending]) -> list[Rows | Refusal]:
        """The requests encoded, in order: those with the same columns as one table where it encodes cleanly."""
        out: list[Rows | Refusal | None] = [None] * len(pending)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(pending):
            alone = request.rows is None or not isinstance(request.columns, dict)
            groups.setdefault(("alone", i) if alone else tuple(sorted(request.columns)), []).append(i)
        for names, members in groups.items():
            if len(members) > 1:
                together = self._encode_one({name: [v for i in members for v in pending[i].columns[name]]
                                             for name in names})
                if isinstance(together, Rows) and not together.warnings:
                    start = 0
                    for i in members:
                        n, (x, given) = pending[i].rows, together.encoded
                        out[i] = Rows(Encoded(x[start:start + n], None if given is None else given.slice(start, n)),
                                      [])
                        start += n
                    continue
            for i in members:
                out[i] = self._encode_one(pending[i].columns)
        return out

    def _encode_one(self, columns: Any) -> Rows | Refusal:
        """Rows checked and encoded by the predictor, with the lines ``predict`` would print for them, or why they
        are refused."""
        try:
            said = StringIO()
            with heard() as warnings, redirect_stdout(said):  # the lines predict would print, for the client
                encoded = self.predictor.encode(columns)
            return Rows(encoded, [*said.getvalue().splitlines(), *warnings])
        except InputError as err:
            return Refusal(422, str(err).splitlines()[0])
        except Exception as err:  # noqa: BLE001 - a fault of ours: its traceback here, a 500 for this request alone
            traceback.print_exc()
            return Refusal(500, f"internal error: {type(err).__name__}: {err}".splitlines()[0])

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            return self.predictor.outputs(x)
        name, dtype = self.onnx_input
        return torch.from_numpy(self.session.run(None, {name: x.numpy().astype(dtype)})[0]).float()

    def encode_response(self, output):  # unannotated, as decode_request
        """The JSON answer as a finished starlette ``Response``: its status is the request's own, and the worker,
        not the HTTP server, spends the time to write the JSON."""
        if isinstance(output, Refusal):
            return _json(output.status, {"detail": str(output)})
        rows, outputs = output
        predictions = self.predictor.table(rows.encoded, outputs).to_pylist()
        return _json(200, {"predictions": predictions, "warnings": rows.warnings})


class _WaitingLoop(BatchedLoop):
    """LitServe's batched loop (0.2) that waits for the first request of a batch instead of asking the request
    queue, a multiprocessing manager's, for one every millisecond: idle, that costs about 13% of a core between
    the manager and each worker. Then, as LitServe's, it takes the requests that come within ``batch_timeout``,
    up to ``max_batch_size``."""

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        batch, timed_out, deadline = [], [], None
        while len(batch) + len(timed_out) < lit_api.max_batch_size:
            try:  # an idle second returns nothing, for the loop's own checks
                item = request_queue.get(timeout=1.0 if deadline is None else max(0.0, deadline - time.monotonic()))
            except Empty:
                break
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, timestamp, x_enc = item
            self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
            limit = lit_api.request_timeout  # LitServer's timeout: a request that waited longer gets 504
            if limit not in (-1, False, None) and time.monotonic() - timestamp > limit:
                timed_out.append((response_queue_id, uid))
            else:
                batch.append((response_queue_id, uid, x_enc))
            if deadline is None:
                deadline = time.monotonic() + lit_api.batch_timeout
        return batch, timed_out


def _rows(payload: Any, table: bool) -> Pending:
    """The rows of a request's JSON as :meth:`Predictor.encode` takes them: a dict of columns (records become
    columns; a key a record lacks, an empty cell; a single value, a column of one), or for a model without a table
    the list of rows itself."""
    if isinstance(payload, (dict, list)) and not payload:
        raise Refusal(400, "no rows: expected a list of records or a dict of columns")
    if not table:
        if not isinstance(payload, list):
            raise Refusal(400, "expected a list of rows, each a list of numbers")
        return Pending(payload, None)
    if isinstance(payload, dict):
        if any(isinstance(v, list) and not v for v in payload.values()):
            raise Refusal(400, "no rows: the columns are empty lists")
        columns = {name: v if isinstance(v, list) else [v] for name, v in payload.items()}
        lengths = {len(v) for v in columns.values()}
        return Pending(columns, lengths.pop() if len(lengths) == 1 else None)  # unequal: encode says so
    if not isinstance(payload, list):
        raise Refusal(400, f"a JSON {_kind(payload)}: expected a list of records or a dict of columns")
    for i, record in enumerate(payload):
        if not isinstance(record, dict):
            raise Refusal(400, f"row {i} is a JSON {_kind(record)}: expected a record of column: value")
    return Pending(columns_of(payload), len(payload))


def _kind(value: Any) -> str:
    """What JSON calls the type of a parsed value."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {int: "number", float: "number", str: "string", list: "array"}.get(type(value), "object")


def _json(status: int, body: dict) -> Response:
    try:
        content = json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # a NaN or infinity: JSON has no such number
        content = json.dumps(_finite(body), ensure_ascii=False, default=str)
    return Response(content.encode(), status_code=status, media_type="application/json")


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``null``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- in the HTTP server -------------------------------------------------------------------------------------------
class BodyCheck:
    """ASGI middleware in front of LitServe's endpoints: a POST body is read here, up to ``max_bytes`` (413 past
    them, from ``Content-Length`` without reading, or as a chunked body passes them), and refused with 400 when it
    is empty or not JSON (LitServe would answer 500); then handed on, marked as JSON whatever its Content-Type said.
    Every answer with an error status is written to stderr, one line.

    Args:
        app: the ASGI application it guards.
        max_bytes: the largest body.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _logged(scope, send)
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = f"the body is larger than {self.max_bytes / 1e6:g} MB (the server's --max_request_mb)"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send(send, 413, limit)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _send(send, 413, limit)
                return
            if not message.get("more_body", False):
                break
        if not body.strip():
            await _send(send, 400, "the body is empty: expected JSON rows")
            return
        try:
            json.loads(body)
        except ValueError as err:  # UnicodeDecodeError too
            await _send(send, 400, f"the body is not JSON: {err}")
            return
        # LitServe reads a form by its Content-Type; these rows are JSON whatever it says (curl -d says a form)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, if LitServe waits for one
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _send(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _logged(scope: dict, send: Any) -> Any:
    """``send`` that writes an answer with an error status to stderr: method, path, status, client and the
    start of the answer."""
    status, shown = 200, bytearray()

    async def logged(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and status >= 400:
            shown.extend(message.get("body", b"")[:SHOWN_ERROR - len(shown)])
            if not message.get("more_body", False):
                client = ":".join(map(str, scope.get("client") or ("?",)))
                text = shown.decode(errors="replace")
                try:
                    text = json.loads(text).get("detail", text)
                except (ValueError, AttributeError):
                    pass
                write_line(f"{scope['method']} {scope['path']} {status} ({client}): {text}", sys.stderr)
        await send(message)

    return logged
