"""The ``lit-regression`` command: LightningCLI with our defaults (``fit``, ``validate``, ``test``, ``predict``)."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from types import MethodType

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback, instantiate_class
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_regression.callbacks import Convergence, ParameterReport, Plots, PredictionWriter
from lit_regression.callbacks.finite import FiniteCheck
from lit_regression.callbacks.progress import RunProgressBar
from lit_regression.checkpointing import (Interrupted, RandomState, ResumableCheckpoint, find_checkpoint,
                                          read_checkpoint, resolve_resume, resume_config_name, run_of, unused_path,
                                          with_atomic_io)
from lit_regression.datamodules import TableDataModule, TensorDataModule
from lit_regression.deploy import COMMANDS, main as deploy_main
from lit_regression.errors import InputError, say
from lit_regression.files import WriteError, refused_write
from lit_regression.hooks import OwnHooks
from lit_regression.logger import RunLogger
from lit_regression.models import LitModel
from lit_regression.tables import absolute_path

# ckpt_path values that Lightning resolves itself instead of reading a file
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
# epochs of a fit that sets no limit: Lightning's own default, said in our words instead of its warning
DEFAULT_MAX_EPOCHS = 1000
# the model's own optimizer settings, which --optimizer replaces: (argument, value that means "not set")
MODEL_OPTIMIZER_ARGS = (("lr", None), ("optimizer", "auto"), ("weight_decay", 0.0))
# data arguments that name files: made absolute, since they mean paths relative to the working folder
DATA_PATH_ARGS = ("path", "predict_path", "val_path", "test_path")


def _as_subclass_config(hparams: dict) -> dict | None:
    """Saved hyperparameters (``_class_path`` plus arguments) as a ``class_path``/``init_args`` config."""
    hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
    if "_class_path" not in hparams:
        return None
    return {"class_path": hparams.pop("_class_path"), "init_args": hparams}


def _import_class(class_path: str | None) -> type | None:
    """The class at a dotted import path, or ``None`` where there is none."""
    try:
        module, name = str(class_path).rsplit(".", 1)
        return getattr(importlib.import_module(module), name, None)
    except (ValueError, ImportError):
        return None


def _class_of(config) -> type | None:
    return _import_class(getattr(config, "class_path", None)) if config is not None else None


# --- the command line before it is parsed ---------------------------------------------------------------------
def _option_value(args: list[str], option: str) -> tuple[bool, str | None]:
    """``(given, value)`` of the last ``--option VALUE`` or ``--option=VALUE`` in ``args``."""
    given, value = False, None
    for i, arg in enumerate(args):
        if arg == option:
            given, value = True, args[i + 1] if i + 1 < len(args) else None
        elif arg.startswith(option + "="):
            given, value = True, arg.split("=", 1)[1]
    return given, value


def _on_command_line(args: list[str], *keys: str) -> bool:
    """Whether any of the dotted ``keys`` (or an option below one) is given on the command line."""
    options = [f"--{key}" for key in keys]
    return any(arg == o or arg.startswith((o + "=", o + ".")) for arg in args for o in options)


def _scan_ckpt_path(args) -> tuple[str | None, str | None]:
    """The subcommand and the ``--ckpt_path`` value of a command line, before it is parsed."""
    if not isinstance(args, (list, tuple)):
        return None, None
    args = [str(a) for a in args]
    subcommand = next((a for a in args if a in SUBCOMMANDS), None)
    return subcommand, _option_value(args, "--ckpt_path")[1]


def _peek(args: list[str], key: str, default=None):
    """The value of a dotted ``key`` before parsing: the command line's, else the last config file's that sets it
    (``--config`` files are read in order, later ones override), else ``default``."""
    given, value = _option_value(args, f"--{key}")
    if given:
        try:
            return yaml.safe_load(value) if value is not None else None
        except yaml.YAMLError:
            return value
    found = default
    for i, arg in enumerate(args):
        path = args[i + 1] if arg in ("--config", "-c") and i + 1 < len(args) else None
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else path
        if path is None or not os.path.isfile(path):
            continue
        try:
            with open(path) as file:
                node = yaml.safe_load(file)
        except (OSError, yaml.YAMLError):
            continue
        for part in key.split("."):
            node = node.get(part, default) if isinstance(node, dict) else default
        if node is not default:
            found = node
    return found


class RunConfig(OwnHooks, SaveConfigCallback):
    """``SaveConfigCallback`` that never overwrites an earlier run's config and never fails on one: the config is
    saved as ``config.yaml``, or ``config-vN.yaml`` (the first free N) where that exists. Each run logs into a
    fresh version folder, so that happens only where runs share a folder: ``--trainer.logger false`` (every run
    logs into the root itself) or a logger with a fixed version. The config is still saved there, under a fresh
    name, because it is what makes the run's checkpoints and predictions reproducible; numbered as
    ``ModelCheckpoint`` numbers ``last-vN.ckpt`` in the same situation."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.already_saved and not self.overwrite and self.save_to_log_dir:
            log_dir = trainer.log_dir  # a collective under DDP: every process asks
            name = self.config_filename
            if trainer.is_global_zero and log_dir is not None:
                name = os.path.basename(unused_path(os.path.join(log_dir, name)))
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer, pl_module) -> None:
        """The model class, the optimizer that runs and the target, as hyperparameters of the run's HParams
        session."""
        optimizer = type(trainer.optimizers[0]).__name__ if trainer.optimizers else None
        targets = getattr(trainer.datamodule, "target_names", None) or ()
        params = {"model": type(pl_module).__name__, "optimizer": optimizer, "target": "+".join(map(str, targets))}
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger):
                logger.log_run_params(params)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A command refused for its input before it logged a metric or saved a checkpoint leaves no run folder
        behind: what it wrote (an empty events file, its config) says nothing, and the error line says why. A run
        that logged or saved something keeps everything (the curves of a fit that diverged show how), as does one
        that failed to write (its error lists what was saved)."""
        cause = _input_error(exception)
        if cause is None or isinstance(cause, WriteError):
            return
        checkpoint = trainer.checkpoint_callback
        saved = checkpoint is not None and trainer.state.fn == "fit" and any(
            p and os.path.exists(p) for p in (checkpoint.last_model_path, checkpoint.best_model_path))
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger) and not saved and not logger.final_metrics:
                logger.discard()


class LitRegressionCLI(LightningCLI):
    """LightningCLI with lit_regression's defaults: seed 42, runs under ``runs/``, TensorBoard logging into a
    fresh version folder, checkpoints on ``val_loss`` plus ``last.ckpt``, the data's shape linked into the
    model, predictions and a parameter report written into the run folder, and checkpoints read as weights only.
    A checkpoint passed as ``--ckpt_path FILE`` (or ``last``, ``best``) supplies the model and data arguments it
    was trained with, as defaults that the command line and config files override. Every mistake in the
    arguments is one line (see :func:`main`), a mistyped key with the nearest valid one."""

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        _quiet()  # also where the class is used without main(): tests, benchmarks, a notebook
        # always on: stop at a non-finite loss; keep the global random state in checkpoints (exact resume)
        trainer_defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        extra = trainer_defaults.get("callbacks") or []
        trainer_defaults["callbacks"] = [FiniteCheck(), RandomState(), *(extra if isinstance(extra, list) else [extra])]
        kwargs.setdefault("save_config_callback", RunConfig)
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

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        # parse errors are raised (parse_arguments turns them into one line) instead of printing the usage and
        # the whole Union dump; and no abbreviated options: `--trainer.max_epoch` is the typo it is in a YAML
        # file, not max_epochs (jsonargparse deprecates abbreviations; its v5 has none by default)
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        # the commands outside LightningCLI's (deploy.py) are named where `lit-regression --help` looks
        others = "; ".join(f"lit-regression {command}: {what}" for command, what in COMMANDS.items())
        kwargs.setdefault("description", f"Train, validate, test and predict with Lightning's Trainer. Also: {others} "
                                         "(each has --help).")
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(Convergence, "convergence")
        parser.add_lightning_class_args(ParameterReport, "report")
        parser.add_lightning_class_args(Plots, "plots")
        parser.add_argument(
            "--name", type=str | None, default=None,
            help="The run's folder under trainer.default_root_dir, where runs are NAME/TIMESTAMP: by default "
                 "<config>/<Model>-<target> (<Model>-<target> without --config). test, validate and predict from a "
                 "run's checkpoint log into that run (a stage folder of it) unless a name is given.")
        parser.set_defaults(
            {
                "trainer.default_root_dir": "runs",
                "checkpoint.monitor": "val_loss",
                "checkpoint.save_last": True,
                # a table of the metric modules of a one-layer model says nothing about the run; Lightning's own
                # default is on: --trainer.enable_model_summary true shows it
                "trainer.enable_model_summary": False,
            }
        )
        parser.link_arguments("data.n_features", "model.init_args.n_features", apply_on="instantiate")
        parser.link_arguments("data.n_outputs", "model.init_args.n_outputs", apply_on="instantiate")

    # --- checkpoints as the source of model and data arguments ------------------------------------------------
    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        raw = sys.argv[1:] if args is None else args
        self.command_line = [str(a) for a in raw] if isinstance(raw, (list, tuple)) else []
        subcommand, ckpt_path = _scan_ckpt_path(raw)
        ckpt_file = self._checkpoint_file(subcommand, ckpt_path)
        try:
            if ckpt_file is not None:
                checkpoint = read_checkpoint(ckpt_file)
                defaults = {}
                for key, saved in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
                    config = _as_subclass_config(checkpoint.get(saved) or {})
                    if config is not None:
                        defaults[key] = config
                self._parser(subcommand).set_defaults(defaults)
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            own = getattr(self, "_subcommand_parsers", {}).get(subcommand, parser)  # for the valid keys
            raise InputError(_argument_message(err, own)) from None

    def _checkpoint_file(self, subcommand: str | None, ckpt_path: str | None) -> str | None:
        """The file whose arguments become defaults: ``--ckpt_path FILE``, or the checkpoint that ``last`` or
        ``best`` will resolve to (see :func:`~lit_regression.checkpointing.resolve_resume`), found under the
        ``--trainer.default_root_dir`` of the command line or its config files. None where Lightning resolves
        ``last``/``best`` itself (a ``--trainer.logger`` or ``--checkpoint.dirpath`` of one's own)."""
        if subcommand not in getattr(self, "_subcommand_parsers", {}) or not ckpt_path:
            return None
        if ckpt_path not in SPECIAL_CKPT_PATHS:
            return ckpt_path
        if ckpt_path not in ("last", "best"):
            return None
        args = self.command_line
        if _peek(args, "trainer.logger") not in (None, True, False) or _peek(args, "checkpoint.dirpath") is not None:
            return None
        root = _peek(args, "trainer.default_root_dir", "runs") or "runs"
        return find_checkpoint(ckpt_path, str(root), "to resume from" if subcommand == "fit" else "to load")

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
        # the files of the data as absolute paths: they mean paths relative to this working folder, and the saved
        # config.yaml (and a checkpoint's arguments) must mean the same from any other
        for name in DATA_PATH_ARGS:
            value = data_args.get(name) if data_args is not None else None
            if isinstance(value, str) and value:
                data_args[name] = absolute_path(value)
        notes = []
        trainer = config.get("trainer")
        if trainer is not None and trainer.get("max_epochs") is not None and trainer.max_epochs < 1 and trainer.max_epochs != -1:
            raise InputError(f"trainer.max_epochs={trainer.max_epochs!r} is invalid: expected at least 1 (or -1)")
        if (self.subcommand == "fit" and trainer is not None and trainer.get("max_epochs") is None
                and trainer.get("max_steps") in (None, -1) and trainer.get("max_time") is None
                and not trainer.get("fast_dev_run")):
            trainer["max_epochs"] = DEFAULT_MAX_EPOCHS  # what Lightning would take, with its warning
            notes.append(f"trainer.max_epochs is not set: at most {DEFAULT_MAX_EPOCHS} epochs "
                         "(--trainer.max_epochs N to choose, -1 for no limit)")
        optimizer_args = (config.get("optimizer") or {}).get("init_args") or {}
        if isinstance(optimizer_args.get("lr"), (int, float)) and optimizer_args.get("lr") <= 0:
            raise InputError(f"optimizer.lr={optimizer_args.get('lr')!r} is invalid: expected a number greater than 0")
        if self.subcommand == "fit":
            self._check_optimizer_args(config)
        name = config.get("name")
        if name is not None and (not str(name).strip() or os.path.isabs(name) or os.pardir in Path(name).parts):
            raise InputError(f"name={name!r} is invalid: expected a folder name under trainer.default_root_dir "
                             "(relative, without '..')")
        # --ckpt_path last: the newest last.ckpt of an earlier run; a resumed fit logs on in that run's folder
        self.resume_run = None
        if self.subcommand and config.get("ckpt_path"):
            trainer = trainer or {}
            ckpt_path, self.resume_run = resolve_resume(
                self.subcommand, config.ckpt_path, trainer.get("default_root_dir") or "runs",
                own_logger=trainer.get("logger") in (None, True, False),
                dirpath=(config.get("checkpoint") or {}).get("dirpath"),
            )
            if ckpt_path != config.ckpt_path:
                read_checkpoint(ckpt_path)  # refuses, with a message, what is unsafe or no checkpoint
                config["ckpt_path"] = ckpt_path
        for note in notes:  # after every check: an error comes alone
            say(note)

    def _check_optimizer_args(self, config) -> None:
        """``--optimizer`` replaces the model's ``configure_optimizers``, so ``model.lr``, ``model.optimizer`` and
        ``model.weight_decay`` would do nothing, and config.yaml would still record them. Given on the command line
        (or in the same files as ``--optimizer``) they are refused; where only a config file (a shipped one, say)
        or a checkpoint set them and ``--optimizer`` comes from the command line, the command line overrides the
        file: they are reset to their defaults, said in one line."""
        optimizer = config.get("optimizer")
        model_args = getattr(config.get("model"), "init_args", None)
        if not optimizer or model_args is None:
            return
        ignored = {name: model_args[name] for name, unset in MODEL_OPTIMIZER_ARGS
                   if name in model_args and model_args[name] != unset}
        if not ignored:
            return
        name = str(getattr(optimizer, "class_path", optimizer)).rsplit(".", 1)[-1]
        listed = ", ".join(f"model.{k}={v!r}" for k, v in ignored.items())
        args = self.command_line
        given = [k for k in ignored if _on_command_line(args, f"model.{k}", f"model.init_args.{k}")]
        if given or not _on_command_line(args, "optimizer"):
            moved = [f"--optimizer.{k} {ignored[k]}" for k in ("lr", "weight_decay") if k in ignored]
            advice = [f"give {' and '.join(moved)} instead"] if moved else []
            advice += ["leave model.optimizer out"] if "optimizer" in ignored else []
            raise InputError(
                f"{listed} {'has' if len(ignored) == 1 else 'have'} no effect with --optimizer {name} (it replaces "
                f"the model's own optimizer): {', and '.join(advice)}"
            )
        for key, unset in MODEL_OPTIMIZER_ARGS:
            if key in ignored:
                model_args[key] = unset
        say(f"--optimizer {name} replaces the model's own optimizer: {listed} of the config left out")

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """LightningCLI's, plus: ``--lr_scheduler`` without ``--optimizer`` schedules the model's own optimizer
        (SGD with ``--model.lr``), where LightningCLI would leave the scheduler out without a word."""
        with warnings.catch_warnings():
            # every LitModel defines configure_optimizers (the `auto` choice), so LightningCLI warns at every
            # --optimizer that it replaces it: that is what --optimizer is for (and _check_optimizer_args refuses
            # the model's own optimizer arguments beside it)
            warnings.filterwarnings("ignore", message=r".*configure_optimizers` will be overridden by")
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
            kwargs["logger"] = self._run_logger(config.get("default_root_dir") or "runs")
            if getattr(self, "resume_run", None) is not None:  # resuming into the killed run's folder: keep its config
                self.save_config_kwargs = {**self.save_config_kwargs,
                                           "config_filename": resume_config_name(kwargs["logger"].log_dir)}
        kwargs["plugins"] = with_atomic_io(config.get("plugins"))  # checkpoints written atomically
        callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        if config.get("enable_checkpointing") is False:
            # --trainer.enable_checkpointing false: no checkpoint callback, where Lightning refuses ours
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in [*given, *callbacks, *self.trainer_defaults["callbacks"]]):
            # ours, where Lightning would take RichProgressBar (rich is installed, for --trainer.callbacks+=
            # RichProgressBar) or TQDMProgressBar: one bar over the run with the losses
            callbacks.append(RunProgressBar())
        if config.get("fast_dev_run"):
            # Lightning suppresses logging and checkpointing: our files are left out as well
            for callback in callbacks:
                if isinstance(callback, (PredictionWriter, ParameterReport, Plots)):
                    callback.enabled = False
        # LightningCLI.instantiate_trainer takes every callback group as it is; it has no public hook to leave
        # one out, so this is its body with the list filtered, calling the method it calls
        trainer = self._instantiate_trainer({**config, **kwargs}, callbacks)
        _say_accelerator(trainer)
        return trainer

    def _run_logger(self, root: str) -> RunLogger:
        """The logger of this command's run folder: the killed run's own for a fit resumed from its last.ckpt; a
        stage folder of the checkpoint's run for test, validate and predict (``RUN/test`` ...), unless ``--name``
        asks for a run of its own; otherwise a fresh ``ROOT/NAME/TIMESTAMP``."""
        settings = self.config[self.subcommand] if self.subcommand else self.config
        if getattr(self, "resume_run", None) is not None:
            return RunLogger.into(self.resume_run, root)
        ckpt_path, name = settings.get("ckpt_path"), settings.get("name")
        if self.subcommand != "fit" and name is None and isinstance(ckpt_path, str) and os.path.isfile(ckpt_path):
            run = run_of(ckpt_path)
            if run is not None:
                return RunLogger.into(run, root, stage=self.subcommand)
        return RunLogger(save_dir=root, name=name or self._default_name(settings))

    def _default_name(self, settings) -> str:
        """``<config>/<Model>-<target>``: the first config file's name, the model class, the target column(s)."""
        targets = [str(t) for t in getattr(self.datamodule, "target_names", None) or ()]
        leaf = folder_name("-".join([type(self.model).__name__, *(["+".join(targets)] if targets else [])]))
        configs = settings.get("config") or []
        return os.path.join(folder_name(Path(str(configs[0])).stem), leaf) if configs else leaf

    # --- after each command: where things went ----------------------------------------------------------------
    def after_fit(self) -> None:
        """Predict with the final weights, so the fit's folder holds its predictions too; then say where things
        went."""
        writers = [c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)]
        if self.datamodule is not None and any(w.enabled for w in writers):
            self.trainer.predict(self.model, datamodule=self.datamodule, return_predictions=False)
        self.say_where_things_went()

    def after_validate(self) -> None:
        self.say_where_things_went()

    def after_test(self) -> None:
        self.say_where_things_went()

    def after_predict(self) -> None:
        self.say_where_things_went()

    def say_where_things_went(self) -> None:
        """A few lines, first process only: the run folder, the checkpoints (fit) or the one loaded, the files of
        the callbacks, and the TensorBoard command; a line only for what exists."""
        for line in where_things_went(self.trainer, self.subcommand, self.config[self.subcommand].get("ckpt_path")):
            say(line)


def _say_accelerator(trainer) -> None:
    """One line where the machine has a GPU (CUDA or Apple's MPS) that the run does not use; nothing otherwise."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    kind = "cuda" if CUDAAccelerator.is_available() else "mps" if MPSAccelerator.is_available() else None
    if kind and not isinstance(trainer.accelerator, (CUDAAccelerator, MPSAccelerator)):
        say(f"a GPU ({kind}) is here but this run uses the CPU: --trainer.accelerator gpu to use it")


def folder_name(text: str, limit: int = 80) -> str:
    """``text`` as one folder name: letters, digits and ``+-._`` kept, anything else (``/``, spaces, ``$``) as
    ``_``; at most ``limit`` characters."""
    name = re.sub(r"[^\w+\-.]+", "_", text).strip("._") or "run"
    return name[:limit]


def where_things_went(trainer, subcommand: str | None, ckpt_path: str | None = None) -> list[str]:
    """The lines of :meth:`LitRegressionCLI.say_where_things_went`."""
    def exists(path) -> bool:
        return bool(path) and os.path.exists(path)

    lines = []
    if trainer.fast_dev_run:
        return lines
    run = trainer.log_dir
    if exists(run):
        lines.append(f"run folder:      {run}")
    checkpoint = trainer.checkpoint_callback
    if subcommand == "fit" and checkpoint is not None:
        if exists(checkpoint.best_model_path):
            lines.append(f"best checkpoint: {checkpoint.best_model_path}")
        if exists(checkpoint.last_model_path):
            lines.append(f"last checkpoint: {checkpoint.last_model_path}")
    elif subcommand != "fit" and isinstance(ckpt_path, str) and exists(ckpt_path):
        lines.append(f"checkpoint:      {ckpt_path} (loaded)")
    for callback in trainer.callbacks:
        if isinstance(callback, PredictionWriter) and exists(callback.path):
            lines.append(f"predictions:     {callback.path}")
        elif isinstance(callback, ParameterReport) and exists(getattr(callback, "path", None)):
            lines.append(f"report:          {callback.path}")
        elif isinstance(callback, Plots):
            figures = [p for p in (getattr(callback, "paths", None) or {}).values() if exists(p)]
            if figures:
                folder = os.path.dirname(figures[0])
                lines.append(f"figures:         {folder} ({', '.join(os.path.basename(p) for p in figures)})")
    loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    if loggers and exists(loggers[0].log_dir) and subcommand != "predict":  # predict logs nothing to show
        lines.append(f"tensorboard --logdir {loggers[0].save_dir}   (the losses together: its Custom Scalars tab)")
    return lines


# --- the console: only what concerns the run ------------------------------------------------------------------
class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        message = re.sub(r"^\[rank: \d+\] ", "", str(record.getMessage()))  # rank_prefixed_message's
        return not message.startswith(self.prefixes)


# Lightning's "💡 Tip: ... litlogger / litmodels" advertisements, and its accelerator lines, which say "False"
# on every machine without one (a GPU that is there but unused is said in one line of our own: _say_accelerator)
# and its lines about the checkpoint a test, validate or predict loads, which the CLI names itself at the end
_TIPS = _DropMessages("💡 Tip:", "GPU available:", "TPU available:", "HPU available:",
                      "Restoring states from the checkpoint path at", "Loaded model weights from the checkpoint at")
# the seed is the config's (seed_everything: 42, in every config.yaml), the same line in front of every command
_SEED = _DropMessages("Seed set to")


def _quiet() -> None:
    """Silence advertising and deprecation chatter of the libraries, which says nothing about the user's run, and
    warnings that do not apply to this package's models and loaders (each filtered by its own message)."""
    # rank_zero_info's messages (lightning_utilities logs them on whichever of these two loggers was set up last)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        rank_zero_logger = logging.getLogger(name)
        if _TIPS not in rank_zero_logger.filters:
            rank_zero_logger.addFilter(_TIPS)
    seed_logger = logging.getLogger("lightning.fabric.utilities.seed")
    if _SEED not in seed_logger.filters:
        seed_logger.addFilter(_SEED)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
    warnings.filterwarnings("ignore", message="GPU available but not used")  # said by _say_accelerator
    # the models log their epoch values themselves (LitModel._log_epoch), never per step: Lightning's advice to
    # lower log_every_n_steps below the batches of an epoch (one, on full batches) has nothing to show
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # a split without rows is served as an empty list on purpose (no validation or test rows)
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero\. Please make sure")


# --- one line for every mistake ---------------------------------------------------------------------------------
def main(args=None) -> None:
    """Entry point of ``lit-regression`` and ``python -m lit_regression``."""
    _quiet()
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in COMMANDS:  # export and serve: a trained model, no Trainer
            deploy_main(argv)
            return
        LitRegressionCLI(args=args)
        _leave_process_group()
    except Interrupted as stop:  # SIGTERM or Ctrl-C: the epoch finished and its checkpoint is written
        say(f"lit-regression: {stop}")
        sys.exit(128 + stop.signum)
    except Exception as err:  # our InputError, also where jsonargparse wrapped it into its own ValueError
        message = _user_error(err)
        if message is None:
            raise
        if not (getattr(_input_error(err), "everywhere", False) and rank_zero_only.rank):  # said by the first alone
            print(f"lit-regression: error: {message}", file=sys.stderr)
        sys.exit(2)


def _leave_process_group() -> None:
    """Under DDP, close the process group when the command is done, while every thread is still running, rather
    than in Lightning's ``atexit`` handler during the interpreter's shutdown: there, 1 run in 6 on the CPU (gloo)
    ended with ``terminate called without an active exception`` and SIGABRT after all its work was written."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _user_error(err: BaseException) -> str | None:
    """The one line for an error the user caused, or ``None`` for a bug (which keeps its traceback)."""
    cause = _input_error(err)
    if cause is not None:
        return str(cause)
    if isinstance(err, ArgumentError):
        return _argument_message(err)
    refused = refused_write(err)
    if refused is not None:
        return str(refused)
    return _missing_package(err)


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


def _missing_package(err: BaseException | None) -> str | None:
    """A callback, logger or other class of the config that needs a package which is not installed: Lightning's
    own message where it says what to install (``RichProgressBar requires rich ... pip install``, ``Requirement
    'wandb' not met``), else which package is missing. Only for packages that really are absent, so that a broken
    import inside an installed one keeps its traceback."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ImportError):
            text = " ".join(str(err).split())
            if "install" in text.lower() and ("requires" in text or "Requirement" in text):
                return text
            top = (getattr(err, "name", None) or "").split(".")[0]
            if top and top != "lit_regression" and importlib.util.find_spec(top) is None:
                return (f"the package {top!r} is not installed, and a class of the config needs it "
                        f"(No module named {err.name!r}): install it, e.g. pip install {top}")
        err = err.__cause__ or err.__context__
    return None


# candidate class names of the groups whose class a user names, for "did you mean"
_CLASS_MODULES = {
    "model": ("lit_regression.models",),
    "data": ("lit_regression.datamodules",),
    "optimizer": ("torch.optim",),
    "lr_scheduler": ("torch.optim.lr_scheduler", "lightning.pytorch.cli"),
    "trainer.callbacks": ("lightning.pytorch.callbacks", "lit_regression.callbacks"),
    "trainer.logger": ("lightning.pytorch.loggers",),
}


def _nearest(word: str, choices, prefix: str = "") -> str:
    """`` (did you mean 'X'?)`` for the choice closest to ``word``, or nothing."""
    match = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.75)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def _classes(key: str) -> list[str]:
    """Import paths of the classes one may name for ``key`` (``model``, ``data``, ``optimizer`` ...)."""
    paths = []
    for module in _CLASS_MODULES.get(key, ()):
        try:
            paths += [f"{module}.{n}" for n in dir(importlib.import_module(module)) if n[:1].isupper()]
        except ImportError:
            pass
    return paths


def _class_names(key: str) -> list[str]:
    return [path.rsplit(".", 1)[1] for path in _classes(key)]


def _init_arguments(class_path: str) -> list[str]:
    """The arguments of a class's ``__init__`` (and its bases' where it passes ``**kwargs`` on)."""
    cls = _import_class(class_path)
    if cls is None:
        return []
    names = []
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _parser_keys(parser) -> list[str]:
    try:
        return list(parser.get_defaults().keys())
    except Exception:  # noqa: BLE001 - only for a suggestion
        return []


def _argument_message(err: BaseException, parser=None) -> str:
    """jsonargparse's error (the usage, a dump of every Union member tried) as one line that names the key and
    what was expected, with the nearest valid key or class where one is close."""
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    outer = keys[0] if keys else None
    class_paths = re.findall(r"Problem with given class_path '([^']+)'", text)

    # an unknown argument of a class: model.init_args.lrr, data.standardise_target
    match = re.search(r"Option '([^']+)' is not accepted", text)
    if match and class_paths:
        name, class_path = match.group(1), class_paths[-1]
        where = ".".join([outer, "init_args", *keys[1:], name]) if outer else name
        hint = _nearest(name, _init_arguments(class_path))
        table = f"{TableDataModule.__module__}.{TableDataModule.__name__}"
        if not hint and outer == "data" and not class_path.endswith(".TableDataModule") and name in _init_arguments(table):
            hint = f" (it is a table's: add --data TableDataModule; {class_path.rsplit('.', 1)[-1]} is the default)"
        other = {"model": "data", "data": "model"}.get(outer or "")
        if not hint and other:  # an argument of the other one: model.init_args.standardize_target
            hint = _nearest(name, [a for c in _classes(other) for a in _init_arguments(c)], f"{other}.init_args.")
        return f"{where}: {class_path.rsplit('.', 1)[-1]} has no such argument{hint}"

    # an unknown key of a config file, or an unknown option of the command line
    match = re.search(r"does not accept option '([^']+)'", text) or re.search(r"nrecognized arguments: (\S+)", text)
    if match:
        given = match.group(1)
        dashes = "--" if given.startswith("--") else ""
        key = given[len(dashes):].split("=", 1)[0].removesuffix("+")
        valid = _parser_keys(parser) if parser is not None else []
        parent, _, leaf = key.rpartition(".")
        siblings = [k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == parent]
        # on the command line the whole option, in a config file the key as written under its parent
        hint = _nearest(leaf, siblings, f"{dashes}{parent}." if parent and dashes else dashes) if siblings else ""
        hint = hint or _nearest(key, valid, dashes)
        what = "option" if dashes else "key"
        return f"unknown {what} '{dashes}{key}'" + ("" if dashes else " in the config") + hint

    # a class that cannot be found: --model LinearRegresion, --trainer.callbacks+=EarlyStoping
    match = re.search(r"Expected a dot import path string: (\S+)", text) or \
        re.search(r"Expected a path but (\S+) either not accessible", text)
    if match and outer:
        name = match.group(1)
        return f"{outer}: there is no class {name!r}{_nearest(name, _class_names(outer))}"

    if keys:
        # the innermost key's own message: the lines indented under it
        inner = keys[-1]
        start = next(i for i, line in enumerate(lines) if f'Parser key "{inner}"' in line)
        indent = len(lines[start]) - len(lines[start].lstrip())
        block = [lines[start]] + [line for line in lines[start + 1:] if len(line) - len(line.lstrip()) > indent]
        body = "\n".join(block)
        where = f'{outer}: key "{inner}"' if outer != inner else f'key "{inner}"'
        literal = re.search(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", body)
        if literal:
            return f"{where} expects one of {literal.group(1)}, got {literal.group(2).strip()!r}"
        # a union's members: classes, and the values of a Literal among them (l2: float, 'auto' or None)
        expected = [cls or values for cls, values in
                    re.findall(r"Expected a (?:<class '([^']+)'>|typing\.Literal\[([^\]]*)\])", body)]
        given = re.search(r"Given value: (.*)", body)
        if expected:
            types = " or ".join(dict.fromkeys("None" if t == "NoneType" else t for t in expected))
            return f"{where} expects {types}" + (f", got {given.group(1).strip()!r}" if given else "")
        first = lines[start].split(":", 1)[1].strip() or next(
            (line.strip(" -") for line in block[1:] if line.strip(" -")), "")
        return f"{where}: {first}" if first else where

    first = lines[0] if lines else type(err).__name__
    if "arguments are required" in first and re.search(r"\b(validate|test|predict)\.", first):
        first += " (give a --config, or a --ckpt_path whose checkpoint supplies them: a file, last or best)"
    return first
