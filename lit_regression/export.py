"""Save and load trained weights as the PyTorch tutorials do: a plain ``state_dict`` file, loaded into a fresh model.

``fit`` writes ``weights.pt`` into the run's folder (see :class:`~lit_regression.callbacks.ParameterReport`).
To use it without Lightning's trainer::

    from lit_regression.export import load_weights
    run = "runs/insurance/LinearRegression-charges/2026-12-06_03-10-05"   # the run folder `fit` printed
    model = load_weights(f"{run}/weights.pt", f"{run}/checkpoints/last.ckpt")
    y = model(x)   # eval mode, no gradients needed

The checkpoint only supplies the model's class and constructor arguments (``hyper_parameters``); the weights come
from the ``state_dict`` file, read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch

from lit_regression.checkpointing import read_checkpoint
from lit_regression.errors import InputError
from lit_regression.files import atomic

WEIGHTS_FILE = "weights.pt"


def export_weights(model: torch.nn.Module, path: str | os.PathLike) -> str:
    """Write ``model.state_dict()`` (tensors only, on the CPU) to ``path`` with ``torch.save``; return the path."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    with atomic(path) as f:
        torch.save(state, f)
    return str(path)


def model_config(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The model's ``{"class_path": ..., "init_args": {...}}``, from a Lightning checkpoint file written by the
    CLI, from its ``hyper_parameters`` dict, or given directly."""
    if isinstance(source, (str, os.PathLike)):
        source = read_checkpoint(str(source)).get("hyper_parameters") or {}
    source = dict(source)
    if "class_path" in source:
        return {"class_path": source["class_path"], "init_args": dict(source.get("init_args") or {})}
    if "_class_path" not in source:
        raise InputError("the model's class is unknown: expected a checkpoint written by lit-regression "
                         "(hyper_parameters with '_class_path') or a {'class_path', 'init_args'} config")
    init_args = {k: v for k, v in source.items() if not k.startswith("_")}
    return {"class_path": source["_class_path"], "init_args": init_args}


def lit_class(class_path: str, what: str = "model") -> type:
    """The lit_regression class (a model or a datamodule) at a dotted import path; refuses any other, so that
    a checkpoint or config cannot make us import an arbitrary module."""
    module_name, _, class_name = str(class_path).rpartition(".")
    if not module_name.startswith("lit_regression."):
        raise InputError(f"{what} class {class_path!r} is not a lit_regression {what}")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(config: str | os.PathLike | Mapping[str, Any]) -> torch.nn.Module:
    """A fresh, untrained model of the configured class with the configured constructor arguments."""
    config = model_config(config)
    return lit_class(config["class_path"])(**config["init_args"])


def load_weights(weights: str | os.PathLike, config: str | os.PathLike | Mapping[str, Any]) -> torch.nn.Module:
    """Build the model from ``config`` (see :func:`model_config`), load the ``state_dict`` file ``weights`` into it
    (``weights_only=True``, every key must match) and return it in eval mode."""
    model = build_model(config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_run(run_dir: str | os.PathLike) -> torch.nn.Module:
    """The model of a run folder: its ``weights.pt`` in a model built from its ``checkpoints/last.ckpt``."""
    return load_weights(os.path.join(run_dir, WEIGHTS_FILE), os.path.join(run_dir, "checkpoints", "last.ckpt"))
