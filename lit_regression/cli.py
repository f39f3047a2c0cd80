"""The ``lit-regression`` command: LightningCLI with our defaults (``fit``, ``validate``, ``test``, ``predict``)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from types import MethodType

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, instantiate_class
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_regression.callbacks import Convergence, ParameterReport, Plots, PredictionWriter
from lit_regression.callbacks.finite import FiniteCheck
from lit_regression.checkpointing import (RandomState, ResumableCheckpoint, read_checkpoint, resolve_resume,
                                         resume_config_name, with_atomic_io)
from lit_regression.datamodules import TensorDataModule
from lit_regression.errors import InputError
from lit_regression.logger import RunLogger
from lit_regression.models import LitModel

# ckpt_path values that Lightning resolves itself instead of reading a file
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


def _as_subclass_config(hparams: dict) -> dict | None:
    """Saved hyperparameters (``_class_path`` plus arguments) as a ``class_path``/``init_args`` config."""
    hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
    if "_class_path" not in hparams:
        return None
    return {"class_path": hparams.pop("_class_path"), "init_args": hparams}


def _class_of(config) -> type | None:
    class_path = getattr(config, "class_path", None) if config is not None else None
    if not class_path:
        return None
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name, None)


def _scan_ckpt_path(args) -> tuple[str | None, str | None]:
    """The subcommand and the ``--ckpt_path`` value of a command line, before it is parsed."""
    if not isinstance(args, (list, tuple)):
        return None, None
    args = [str(a) for a in args]
    subcommand = next((a for a in args if a in ("fit", "validate", "test", "predict")), None)
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return subcommand, args[i + 1]
        if arg.startswith("--ckpt_path="):
            return subcommand, arg.split("=", 1)[1]
    return subcommand, None


class LitRegressionCLI(LightningCLI):
    """LightningCLI with lit_regression's defaults: seed 42, runs under ``runs/``, TensorBoard logging into a
    fresh version folder, checkpoints on ``val_loss`` plus ``last.ckpt``, the data's shape linked into the
    model, predictions and a parameter report written into the run folder, and checkpoints read as weights only.
    A checkpoint passed as ``--ckpt_path FILE`` supplies the model and data arguments it was trained with, as
    defaults that the command line and config files override."""

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        # always on: stop at a non-finite loss; keep the global random state in checkpoints (exact resume)
        trainer_defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        extra = trainer_defaults.get("callbacks") or []
        trainer_defaults["callbacks"] = [FiniteCheck(), RandomState(), *(extra if isinstance(extra, list) else [extra])]
        super().__init__(
            model_class=LitModel,
            datamodule_class=TensorDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": False},
            trainer_defaults=trainer_defaults,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(Convergence, "convergence")
        parser.add_lightning_class_args(ParameterReport, "report")
        parser.add_lightning_class_args(Plots, "plots")
        parser.set_defaults(
            {
                "trainer.default_root_dir": "runs",
                "checkpoint.monitor": "val_loss",
                "checkpoint.save_last": True,
            }
        )
        parser.link_arguments("data.n_features", "model.init_args.n_features", apply_on="instantiate")
        parser.link_arguments("data.n_outputs", "model.init_args.n_outputs", apply_on="instantiate")

    # --- checkpoints as the source of model and data arguments ------------------------------------------------
    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        subcommand, ckpt_path = _scan_ckpt_path(sys.argv[1:] if args is None else args)
        if subcommand in getattr(self, "_subcommand_parsers", {}) and ckpt_path and ckpt_path not in SPECIAL_CKPT_PATHS:
            checkpoint = read_checkpoint(ckpt_path)
            defaults = {}
            for key, saved in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
                config = _as_subclass_config(checkpoint.get(saved) or {})
                if config is not None:
                    defaults[key] = config
            self._parser(subcommand).set_defaults(defaults)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Done in :meth:`parse_arguments`, as defaults rather than overrides."""

    # --- checks and defaults that need the parsed config ------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand and config.get("weights_only") is None:
            config["weights_only"] = True
        model_class, data_class = _class_of(config.get("model")), _class_of(config.get("data"))
        model_task, data_task = getattr(model_class, "task", None), getattr(data_class, "task", None)
        data_args = getattr(config.get("data"), "init_args", None)
        if data_args is not None and "task" in data_args:  # TableDataModule: the task is an argument
            if data_args.get("task") is None:  # not given: the model's
                data_args["task"] = model_task or "regression"
            data_task = data_args.get("task")
        if model_task and data_task and model_task != data_task:
            raise InputError(
                f"model {model_class.__name__} does {model_task} but data {data_class.__name__} is for {data_task}: "
                "choose a matching pair (LogisticRegression for classification data)"
            )
        trainer = config.get("trainer")
        if trainer is not None and trainer.get("max_epochs") is not None and trainer.max_epochs < 1 and trainer.max_epochs != -1:
            raise InputError(f"trainer.max_epochs={trainer.max_epochs!r} is invalid: expected at least 1 (or -1)")
        optimizer_args = (config.get("optimizer") or {}).get("init_args") or {}
        if isinstance(optimizer_args.get("lr"), (int, float)) and optimizer_args.get("lr") <= 0:
            raise InputError(f"optimizer.lr={optimizer_args.get('lr')!r} is invalid: expected a number greater than 0")
        # --ckpt_path last: the newest last.ckpt of an earlier run; a resumed fit logs on in that run's version folder
        self.resume_version = None
        if self.subcommand and config.get("ckpt_path"):
            trainer = trainer or {}
            ckpt_path, self.resume_version = resolve_resume(
                self.subcommand, config.ckpt_path, trainer.get("default_root_dir") or "runs",
                own_logger=trainer.get("logger") in (None, True), dirpath=(config.get("checkpoint") or {}).get("dirpath"),
            )
            if ckpt_path != config.ckpt_path:
                read_checkpoint(ckpt_path)  # refuses, with a message, what is unsafe or no checkpoint
                config["ckpt_path"] = ckpt_path

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """LightningCLI's, plus: ``--lr_scheduler`` without ``--optimizer`` schedules the model's own optimizer
        (SGD with ``--model.lr``), where LightningCLI would leave the scheduler out without a word."""
        super()._add_configure_optimizers_method_to_model(subcommand)
        scheduler = self._get(self.config_init, "lr_scheduler")
        if not scheduler or self._get(self.config_init, "optimizer"):
            return
        own = self.model.configure_optimizers

        def configure_optimizers(model):
            optimizer = own()
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise InputError(f"lr_scheduler: {type(model).__name__}.configure_optimizers returns its own "
                                 "schedule; give --optimizer too, or leave --lr_scheduler out")
            return self.configure_optimizers(model, optimizer, instantiate_class(optimizer, scheduler))

        self.model.configure_optimizers = MethodType(configure_optimizers, self.model)

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True):
            version = getattr(self, "resume_version", None)
            kwargs["logger"] = RunLogger(save_dir=config.get("default_root_dir") or "runs", version=version)
            if version is not None:  # resuming into the killed run's folder: keep its config.yaml
                self.save_config_kwargs = {**self.save_config_kwargs,
                                           "config_filename": resume_config_name(kwargs["logger"].log_dir)}
        kwargs["plugins"] = with_atomic_io(config.get("plugins"))  # checkpoints written atomically
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Predict with the final weights, so the fit's folder holds its predictions too."""
        writers = [c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)]
        if self.datamodule is not None and any(w.enabled for w in writers):
            self.trainer.predict(self.model, datamodule=self.datamodule, return_predictions=False)


def _quiet() -> None:
    """Silence advertising and deprecation chatter of the libraries, which says nothing about the user's run."""
    logging.getLogger("lightning.pytorch.trainer.connectors.logger_connector.logger_connector").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")


def main(args=None) -> None:
    """Entry point of ``lit-regression`` and ``python -m lit_regression``."""
    _quiet()
    try:
        LitRegressionCLI(args=args)
    except Exception as err:  # our InputError, also where jsonargparse wrapped it into its own ValueError
        cause = _input_error(err)
        if cause is None:
            raise
        print(f"lit-regression: error: {cause}", file=sys.stderr)
        sys.exit(2)


def _input_error(err: BaseException | None) -> InputError | None:
    """``err`` if it is an :class:`InputError`, else one in its chain of causes that ``err`` quotes (jsonargparse
    raises "Does not validate against any of the Union subtypes ... - <message>" from an error in ``__init__``)."""
    outer, seen = err, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, InputError) and (err is outer or str(err).splitlines()[0] in str(outer)):
            return err
        if err is outer and isinstance(err, MisconfigurationException):  # Lightning's word for a bad setting
            return InputError(str(err))
        err = err.__cause__ or err.__context__
    return None
