"""A trained model as files that leave Python: one ONNX graph that takes the table's raw columns, or a
``torch.export`` program of the numeric path, each with a JSON description beside it.

::

    lit-regression export --ckpt_path last                    # RUN/model.onnx and RUN/model.onnx.json
    lit-regression export --ckpt_path last --format torch     # RUN/model.pt2 and RUN/model.pt2.json

The ONNX graph does what ``lit_regression.load(ckpt).predict`` does to a row, with onnx's own operators:

- one input per feature column, shape ``[rows, 1]``: float32 for a numeric column (an empty cell is NaN), text for a
  categorical one (an empty cell is the empty string ``""``, as ``predict`` reads a blank; a true/false level is
  ``true``, ``True``, ``TRUE`` or ``1``, and ``false`` alike), float64 for a categorical one whose levels are
  numbers (a zip code, a rating: compared as numbers, as ``predict`` does; an empty cell is NaN);
- the fitted imputation (``Where(IsNaN(x), fill, x)``; for text, ``Where(Equal(x, ""), fill, x)``);
- the one-hot encoding (``Equal`` of the column against its levels: a level not seen in training is all zeros,
  as in training; with ``drop_first`` the first level has no column);
- the model exported by ``torch.onnx`` (the scaling buffers, the layers, and for a classifier the softmax);
- one output per column of ``predictions.csv``, shape ``[rows]``: each target in its units, or the predicted label
  and ``prob_<label>`` per class.

``predict`` refuses a row that the graph cannot refuse: an empty cell of a column that is not imputed (the graph
gives NaN, or for text, a row of zeros) or a value beyond float32. Check rows with ``predict`` where that matters.
A model trained without a table (the seed datamodules) takes one float32 input ``x`` of shape ``[rows, features]``.

The batch size is dynamic throughout. The JSON file names the inputs (with their type, levels and fill value),
the outputs, the target, the classes and the versions of lit_regression, the opset and the packages.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import numpy as np
import torch

from lit_regression import __version__
from lit_regression.checkpointing import run_of, unused_path
from lit_regression.errors import InputError
from lit_regression.files import atomic
from lit_regression.predictor import load, outputs_of
from lit_regression.preprocessing import TRUE_FALSE, are_numbers, plain

OPSET = 21  # text Equal needs 19; onnxruntime 1.17 and later run 21
FORMATS = ("onnx", "torch")
SUFFIX = {"onnx": ".onnx", "torch": ".pt2"}
FEATURES, OUTPUTS = "features", "outputs"  # the numeric path's input and output
PRE, MODEL, POST = "pre/", "model/", "post/"  # prefixes of the graph's inner names (never a column's)


class Outputs(torch.nn.Module):
    """What ``predict`` returns for inputs in their own units: targets in their units, or class probabilities."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return outputs_of(self.model, x)


def _example(model) -> torch.Tensor:
    return torch.zeros(2, int(model.hparams.n_features))


def _batch() -> dict:
    return {"x": {0: torch.export.Dim("rows")}}


def torch_program(model: torch.nn.Module):
    """The numeric path (encoded float inputs ``[rows, features]`` to what ``predict`` returns) as a
    ``torch.export.ExportedProgram`` with a dynamic batch, its weights frozen (no gradients)."""
    import copy

    frozen = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    return torch.export.export(Outputs(frozen), (_example(model),), dynamic_shapes=_batch())


def numeric_onnx(model: torch.nn.Module):
    """The numeric path as an ONNX model: input ``features`` (float32 ``[rows, features]``), output ``outputs``
    (``[rows, targets]`` or ``[rows, classes]``), exported by ``torch.onnx`` (its dynamo exporter)."""
    import logging
    import warnings

    # the exporter logs each step and the torchvision ops it skips; its messages are not the user's business
    exporter = logging.getLogger("torch.onnx")
    level, exporter.level = exporter.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Outputs(model.eval().cpu()), (_example(model),), input_names=[FEATURES],
                                        output_names=[OUTPUTS], dynamo=True, opset_version=OPSET,
                                        dynamic_shapes=_batch(), verbose=False, optimize=True)
    finally:
        exporter.level = level
    return program.model_proto


# --- the inputs' types -----------------------------------------------------------------------------------------
def _input_kind(levels: list | None) -> str:
    """A numeric column's input is float32; a categorical one's is text, or float64 where its levels are numbers
    (compared as numbers, as ``predict`` compares them: ``75001`` and ``75001.0`` are one level)."""
    if levels is None:
        return "float32"
    return "float64" if are_numbers(levels) else "string"


def _cell(value, kind: str):
    """A level or fill value as the input of ``kind`` holds it (a true/false level as ``true`` or ``false``)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    return str(plain(value)) if kind == "string" else float(value)


def _spellings(level, kind: str) -> list:
    """The values of an input that stand for ``level``: its own, and for a true/false level every way
    ``predict`` reads one (``true``, ``True``, ``TRUE``, ``1``)."""
    if isinstance(level, (bool, np.bool_)):
        return [text for text, value in TRUE_FALSE.items() if value == bool(level)
                for text in dict.fromkeys([text, text.capitalize(), text.upper()])]
    return [_cell(level, kind)]


ELEMENT = {"float32": 1, "float64": 11, "string": 8, "int64": 7}  # onnx.TensorProto's element types
NUMPY = {"float32": np.float32, "float64": np.float64, "string": object, "int64": np.int64}


# --- the description beside the files -----------------------------------------------------------------------------
def _classes(datamodule) -> list | None:
    return None if datamodule is None else getattr(datamodule, "classes", None)


def output_names(model, datamodule) -> list[str]:
    """The columns of ``predictions.csv`` that hold predictions, in order."""
    from lit_regression.callbacks.predictions import prediction_names

    return [str(name) for name in prediction_names(datamodule, int(model.hparams.n_outputs))]


def _label_kind(classes: list) -> str:
    """The type of the label output: the classes' own (whole numbers, numbers or text)."""
    if are_numbers(classes):
        return "int64" if all(float(c).is_integer() for c in classes) else "float64"
    return "string"


def describe(predictor, format: str, checkpoint: str) -> dict[str, Any]:
    """The JSON description of an exported file: its inputs (name, type, categories, fill), outputs, target,
    classes and the versions that made it."""
    import lightning

    model, dm = predictor.model, predictor.datamodule
    state = dm.fit_preprocessing() if hasattr(dm, "fit_preprocessing") else None
    versions = {"lit_regression": __version__, "torch": torch.__version__,
                "lightning": lightning.__version__}
    if format == "onnx":
        import onnx

        versions.update(onnx=onnx.__version__, opset=OPSET)
    if state is None or format == "torch":  # one float input of the model's encoded columns
        names = list(getattr(dm, "feature_names", None) or []) if state is None else state.names
        inputs = [{"name": "x", "type": "float32", "shape": ["rows", int(model.hparams.n_features)],
                   "columns": [str(n) for n in names]}]
    else:
        inputs = []
        for feature in state.features:
            levels = state.categories.get(feature)
            kind = _input_kind(levels)
            entry = {"name": feature, "type": kind, "shape": ["rows", 1]}
            if levels is not None:
                entry["categories"] = [_cell(level, kind) for level in levels]
            fill = state.fill.get(feature)
            entry["fill"] = None if fill is None else _cell(fill, kind)
            inputs.append(entry)
    classes, names = _classes(dm), output_names(model, dm)
    kinds = ["float32"] * len(names)
    if classes is not None:
        kinds[0] = _label_kind(classes)
    outputs = [{"name": n, "type": t, "shape": ["rows"]} for n, t in zip(names, kinds)]
    if format == "torch":
        outputs = [{"name": "outputs", "type": "float32", "shape": ["rows", len(kinds) - (classes is not None)],
                    "columns": names[classes is not None:]}]
    targets = names if classes is None else names[:1]
    return {"format": format, "model": type(model).__name__, "task": getattr(model, "task", "regression"),
            "target": targets, "classes": None if classes is None else [plain(c) for c in classes],
            "drop_first": bool(state.drop_first) if state is not None else False, "inputs": inputs,
            "outputs": outputs, "checkpoint": os.path.abspath(checkpoint), "versions": versions}


# --- the ONNX graph ---------------------------------------------------------------------------------------------
def onnx_model(predictor):
    """The whole graph of a :class:`~lit_regression.predictor.Predictor`: raw columns in, the columns of
    ``predictions.csv`` out (see the module's docstring). Checked with ``onnx.checker``."""
    import onnx
    from onnx import TensorProto, compose, helper

    model, dm = predictor.model, predictor.datamodule
    numeric = numeric_onnx(model)
    opsets, ir = list(numeric.opset_import), numeric.ir_version

    def graph_model(nodes, inputs, outputs, initializers, name):
        graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir)

    def const(name: str, values, dtype=None):
        return onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    state = dm.fit_preprocessing() if hasattr(dm, "fit_preprocessing") else None
    features = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["rows", int(model.hparams.n_features)])
    if state is None:  # the seed datamodules: the model's inputs as they are
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", int(model.hparams.n_features)])
        inputs, nodes, initializers = [x], [helper.make_node("Identity", ["x"], [FEATURES])], []
    else:
        inputs, nodes, initializers, parts = [], [], [], []
        for j, feature in enumerate(state.features):
            levels, fill, name = state.categories.get(feature), state.fill.get(feature), f"{PRE}{j}"
            kind = _input_kind(levels)
            text = kind == "string"
            inputs.append(helper.make_tensor_value_info(feature, ELEMENT[kind], ["rows", 1]))
            cells = feature
            if fill is not None:  # the training rows' statistic in the empty cells
                initializers.append(const(f"{name}/fill", _cell(fill, kind), NUMPY[kind]))
                empty = f"{name}/empty"
                if text:
                    initializers.append(const(f"{name}/blank", "", object))
                    nodes.append(helper.make_node("Equal", [feature, f"{name}/blank"], [empty]))
                else:
                    nodes.append(helper.make_node("IsNaN", [feature], [empty]))
                cells = f"{name}/filled"
                nodes.append(helper.make_node("Where", [empty, f"{name}/fill", feature], [cells]))
            if levels is None:
                parts.append(cells)
                continue
            kept = [_spellings(level, kind) for level in levels[int(state.drop_first):]]
            flat = [text for texts in kept for text in texts]
            initializers.append(const(f"{name}/levels", flat, NUMPY[kind]))
            nodes.append(helper.make_node("Equal", [cells, f"{name}/levels"], [f"{name}/hot"]))  # [rows, spellings]
            nodes.append(helper.make_node("Cast", [f"{name}/hot"], [f"{name}/onehot"], to=TensorProto.FLOAT))
            if len(flat) > len(kept):  # several spellings of a level: their columns summed into the level's
                spelled = np.zeros((len(flat), len(kept)), dtype=np.float32)
                spelled[np.arange(len(flat)), np.repeat(np.arange(len(kept)), [len(t) for t in kept])] = 1
                initializers.append(const(f"{name}/spelled", spelled))
                nodes.append(helper.make_node("MatMul", [f"{name}/onehot", f"{name}/spelled"], [f"{name}/levelled"]))
                parts.append(f"{name}/levelled")
            else:
                parts.append(f"{name}/onehot")
        nodes.append(helper.make_node("Concat", parts, [FEATURES], axis=1))
    pre = graph_model(nodes, inputs, [features], initializers, "preprocessing")

    # the outputs: a column each, as predictions.csv has them
    classes, names = _classes(dm), output_names(model, dm)
    width = len(names) - (classes is not None)
    nodes, initializers, outputs = [], [], []
    for i, name in enumerate(names[classes is not None:]):
        initializers.append(const(f"{POST}{i}", i, np.int64))
        nodes.append(helper.make_node("Gather", [OUTPUTS, f"{POST}{i}"], [name], axis=1))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["rows"]))
    if classes is not None:
        kind = _label_kind(classes)
        labels = [str(plain(c)) if kind == "string" else plain(c) for c in classes]
        initializers.append(const(f"{POST}classes", labels, NUMPY[kind]))
        nodes.append(helper.make_node("ArgMax", [OUTPUTS], [f"{POST}argmax"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Gather", [f"{POST}classes", f"{POST}argmax"], [names[0]], axis=0))
        outputs.insert(0, helper.make_tensor_value_info(names[0], ELEMENT[kind], ["rows"]))
    scores = helper.make_tensor_value_info(OUTPUTS, TensorProto.FLOAT, ["rows", width])
    post = graph_model(nodes, [scores], outputs, initializers, "outputs")

    numeric = compose.add_prefix(numeric, MODEL, rename_inputs=False, rename_outputs=False)
    whole = compose.merge_models(pre, numeric, io_map=[(FEATURES, FEATURES)])
    whole = compose.merge_models(whole, post, io_map=[(OUTPUTS, OUTPUTS)])
    whole.graph.name = f"lit_regression {type(model).__name__}"
    whole.producer_name, whole.producer_version = "lit_regression", __version__
    onnx.checker.check_model(whole, full_check=True)
    return whole


# --- the command ----------------------------------------------------------------------------------------------------
def default_output(checkpoint: str, format: str) -> str:
    """``RUN/model.onnx`` (``.pt2``) for a checkpoint of a run folder, else beside the checkpoint, named after it;
    a file already there is kept and the new one is ``model-v1.onnx`` ..."""
    run = run_of(checkpoint)
    stem = os.path.join(run, "model") if run else os.path.splitext(checkpoint)[0]
    return unused_path(stem + SUFFIX[format])


def export(ckpt_path: str, format: Literal["onnx", "torch"] = "onnx", output: str | None = None,
           root: str = "runs") -> tuple[str, str]:
    """Write the model of ``ckpt_path`` as one file and its description beside it (the file's name and ``.json``);
    return both paths.

    Args:
        ckpt_path: the checkpoint: its path, or ``last`` (the newest ``last.ckpt`` under ``root``) or ``best``.
        format: ``onnx``: one graph from the raw columns to the predictions (imputation, one-hot encoding,
            scaling and model inside); ``torch``: a ``torch.export`` program (``.pt2``) of the numeric path, from
            the encoded float inputs.
        output: the file to write (replaced if it is there); default ``RUN/model.onnx`` (``.pt2``), never
            replacing one.
        root: where ``last`` and ``best`` are looked for.
    """
    if format not in FORMATS:
        raise InputError(f"format={format!r} is unknown: expected one of {list(FORMATS)}")
    predictor = load(ckpt_path, root)
    checkpoint = predictor.checkpoint
    if output is None:
        output = default_output(checkpoint, format)
    elif os.path.isdir(output) or output.endswith(os.sep):
        raise InputError(f"output={output!r} is a folder: expected the path of the file to write")
    elif os.path.splitext(output)[1] != SUFFIX[format]:
        raise InputError(f"output={output!r} is invalid: --format {format} writes a {SUFFIX[format]} file")
    description = describe(predictor, format, checkpoint)
    if format == "onnx":
        data = onnx_model(predictor).SerializeToString()
        with atomic(output) as f:
            f.write(data)
    else:
        program = torch_program(predictor.model)
        with atomic(output) as f:
            torch.export.save(program, f)
    sidecar = output + ".json"  # model.onnx.json: an ONNX and a torch export of one run each keep their own
    with atomic(sidecar) as f:
        f.write((json.dumps(description, indent=2, ensure_ascii=False) + "\n").encode())
    return output, sidecar
