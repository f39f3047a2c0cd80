"""What every model shares: the objective, one step for train/val/test, epoch metrics, the optimizer, predict."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import Metric

from lit_regression.errors import InputError, count, say

STAGES = ("train", "val", "test")
OPTIMIZERS = ("auto", "newton", "lbfgs", "adam", "sgd")
NEWTON_MAX_PARAMETERS = 4096  # auto picks Newton up to this many parameters (a Hessian of 128 MiB in float64)
# learning rate of each optimizer when --model.lr is not given: L-BFGS takes unit steps (its line search scales
# them); Adam's 1e-3 is its own default; SGD's 0.01 is the seeds'
DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-3, "sgd": 0.01}
# what the progress bar shows of an epoch's values: the losses and the main metric of each task (``val_acc``,
# not ``val_balanced_acc``)
PROGRESS_METRICS = ("loss", "r2", "acc")


class LitModel(L.LightningModule):
    """Base of the lit_regression models. Subclasses build layers, then define ``net``, ``compute_loss``,
    ``make_metrics`` and ``predict_outputs``.

    The fitted scaling of the inputs is part of the model: the buffers ``input_mean`` and ``input_scale`` (and,
    for regression, ``target_mean`` and ``target_scale``) are taken from the datamodule when ``fit`` starts and
    saved with the weights. So ``model(x)`` takes the inputs in their own units (numeric columns as they are,
    one-hot columns as 0/1) and returns the targets in theirs (logits for classification), after
    ``load_from_checkpoint`` and in ``trainer.predict`` with any loader. Training, and the parameters that
    ``linear_parameters`` returns, work on the standardised inputs and targets: ``net(scale_inputs(x))``.

    The objective that training minimises is the mean loss over the training rows plus ``l2 / 2 * ||W||^2 +
    l1 * |W|_1``, where ``W`` are the weights (never the biases, as in scikit-learn). In scikit-learn's terms:
    ``LogisticRegression(C=1 / (l2 * n_train))``; for a linear model with MSE, ``Ridge(alpha=l2 * n_train / 2)``.

    Args:
        n_features: number of input columns (linked from the datamodule by the CLI).
        n_outputs: number of regression targets, or of classes (linked from the datamodule by the CLI).
        optimizer: ``auto`` (the default) takes ``newton`` for linear and logistic models with a smooth
            objective (MSE or Huber loss, no ``l1``), no ``lr`` or ``weight_decay`` and at most 4096 parameters,
            whatever the batches: Newton's method in passes (:mod:`lit_regression.newton`), one step per epoch from the
            exact sums of the epoch's batches, which reaches the optimum in 2 passes for least squares and a few
            for the others. Otherwise it takes L-BFGS with a strong-Wolfe line search when the training rows
            come as one batch and the objective is smooth, and Adam on mini-batches or with an L1 term.
            ``newton``, ``lbfgs``, ``adam`` or ``sgd`` choose one; ``--optimizer CLASS`` replaces all of this.
        lr: learning rate; default 1.0 for L-BFGS, 1e-3 for Adam, 0.01 for SGD (Newton's steps take none).
        l2: strength of the L2 penalty ``l2 / 2 * ||W||^2`` on the weights: scikit-learn's ``C = 1 / (l2 *
            n_train)`` for LogisticRegression, Ridge's ``alpha = l2 * n_train / 2`` for MSE. Default: ``1 /
            n_train`` for LogisticRegression (set when fit starts: scikit-learn's default ``C = 1``), 0 for the
            regression models. ``auto``: the value of ``1 / (C * n_train)``, for LogisticRegressionCV's ten
            ``C`` from 1e-4 to 1e4, with the lowest validation loss, chosen by the newton solver's passes
            (:mod:`lit_regression.newton`).
        l1: strength of the L1 penalty ``l1 * |W|_1`` on the weights.
        weight_decay: the optimizer's own decay, which also shrinks the biases; prefer ``l2``.
        train_metrics: also compute the metrics (``train_mae``, ``train_r2``, ``train_acc`` ...) on the training
            batches; ``train_loss`` is logged either way, and the metrics of the validation (and test) rows always.
            Off by default: a metric update per training step and a compute per epoch cost about 4% of an epoch
            on the seed data (``benchmarks/profile_fit.py``) and tell nothing that the training loss does not.
    """

    task = "regression"

    def __init__(
        self,
        n_features: int = 1,
        n_outputs: int = 1,
        optimizer: Literal["auto", "newton", "lbfgs", "adam", "sgd"] = "auto",
        lr: float | None = None,
        l2: float | Literal["auto"] | None = None,
        l1: float = 0.0,
        weight_decay: float = 0.0,
        train_metrics: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("n_outputs", n_outputs), ("lr", lr)):
            if (value is None and name != "lr") or (value is not None and value <= 0):
                raise InputError(f"model {name}={value!r} is invalid: expected a number greater than 0")
        if isinstance(l2, str) and l2 != "auto":
            raise InputError(f"model l2={l2!r} is invalid: expected a number >= 0 or 'auto'")
        for name, value in (("l2", None if l2 == "auto" else l2), ("l1", l1), ("weight_decay", weight_decay)):
            if value is not None and value < 0:
                raise InputError(f"model {name}={value!r} is invalid: expected a number >= 0")
        if optimizer not in OPTIMIZERS:
            raise InputError(f"model optimizer={optimizer!r} is invalid: expected one of {list(OPTIMIZERS)}")
        self.save_hyperparameters()
        # LogisticRegression's default, and auto's first, are set in setup(), from n_train
        self._l2 = 0.0 if l2 is None or l2 == "auto" else float(l2)
        self._counted = False  # the training batch's loss is counted (L-BFGS evaluates a batch many times)
        self._global_loss = False  # DDP with L-BFGS: the closure returns the loss of all processes
        self._rows_per_process = 0.0  # DDP on full batches: n_train / world_size
        self._newton = None  # the Newton optimizer of this fit, which the training steps feed
        # each stage's mean loss and metrics (torchmetrics), held in plain dicts, outside the module tree: they
        # have no state to save, and every walk over the modules (train(), eval(), parameters(), Lightning's at
        # each validation) would otherwise visit them and hash their states (benchmarks/profile_fit.py);
        # _metrics_on moves them to the device of the data
        self._metrics = {stage: self.make_metrics() if train_metrics or stage != "train" else MeanLoss()
                         for stage in STAGES}
        self._updated: set[str] = set()  # the stages whose metrics were updated since their last compute
        self._metrics_device = torch.device("cpu")
        self._unlogged: tuple[int, dict[str, float]] | None = None  # (step, values) not yet handed to the loggers
        # the fitted input scaling (identity until fit takes the datamodule's): part of the state_dict
        self.register_buffer("input_mean", torch.zeros(n_features))
        self.register_buffer("input_scale", torch.ones(n_features))
        self._scaled = False  # whether the scaling buffers are not the identity (skips two ops per step if so)
        self.register_load_state_dict_post_hook(lambda module, keys: module._scaling_changed())

    # --- for subclasses ---------------------------------------------------------------------------------------
    def make_metrics(self) -> Metric:
        """One stage's loss and metrics: a torchmetrics ``Metric`` or ``MetricCollection`` updated with
        ``(*metric_inputs(outputs, targets), loss=batch_loss)`` and whose ``compute`` returns a dict of named
        values, ``loss`` first (``{"loss": ..., "mae": ..., "r2": ...}``); :class:`MeanLoss` takes the loss."""
        raise NotImplementedError

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, target

    def net(self, z: torch.Tensor) -> torch.Tensor:
        """The model on standardised inputs: outputs in standardised target units (logits for classification)."""
        raise NotImplementedError

    def predict_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """What ``predict`` returns for a batch of outputs of ``forward``."""
        return outputs

    # --- the fitted scaling -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for inputs in their own units: targets in their units (regression), logits (classification)."""
        return self.unscale_outputs(self.net(self.scale_inputs(x)))

    def scale_inputs(self, x: torch.Tensor) -> torch.Tensor:
        # divided in place: the difference is a new tensor, and a batch-sized temporary fewer counts on big batches
        return (x - self.input_mean).div_(self.input_scale) if self._scaled else x

    def scale_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Targets in the units that training fits (standardised, for regression with a fitted target scaling)."""
        return y

    def unscale_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs of ``net`` in the targets' own units."""
        return outputs

    def scaling_buffers(self) -> dict[str, torch.Tensor]:
        return {"input_mean": self.input_mean, "input_scale": self.input_scale}

    def set_scaling(self, scaling: dict[str, torch.Tensor | list[float]]) -> None:
        """Copy a fitted scaling (``input_mean``, ``input_scale``, and for regression ``target_mean``,
        ``target_scale``) into the buffers; a key left out is the identity (mean 0, scale 1)."""
        buffers = self.scaling_buffers()
        unknown = [name for name in scaling if name not in buffers]
        if unknown:
            raise InputError(f"{type(self).__name__} has no scaling {unknown[0]!r}; it has {sorted(buffers)}")
        for name, buffer in buffers.items():
            value = scaling.get(name)
            if value is None:
                value = torch.zeros_like(buffer) if name.endswith("mean") else torch.ones_like(buffer)
            value = torch.as_tensor(value, dtype=buffer.dtype).reshape(-1)
            if value.shape != buffer.shape:
                raise InputError(f"{name} has {count(len(value), 'value')} but the model has "
                                 f"{count(len(buffer), 'input' if name.startswith('input') else 'output')}")
            buffer.copy_(value)
        self._scaling_changed()

    def _scaling_changed(self) -> None:
        means = [b for name, b in self.scaling_buffers().items() if name.endswith("mean")]
        scales = [b for name, b in self.scaling_buffers().items() if name.endswith("scale")]
        self._scaled = any(bool(m.ne(0).any()) for m in means) or any(bool(s.ne(1).any()) for s in scales)

    def raw_units(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """An affine map of the standardised inputs (``weight (outputs, inputs)``, ``bias (outputs,)``) as a map
        of the inputs in their own units to the targets in theirs, in float64 (scikit-learn's ``coef_`` and
        ``intercept_`` on the raw columns); ``None`` when there is no scaling."""
        if not self._scaled:
            return None
        buffers = {name: b.detach().double().cpu() for name, b in self.scaling_buffers().items()}
        weight = weight.detach().double().cpu() / buffers["input_scale"]
        bias = bias.detach().double().cpu() - weight @ buffers["input_mean"]
        if "target_scale" in buffers:
            weight = weight * buffers["target_scale"][:, None]
            bias = bias * buffers["target_scale"] + buffers["target_mean"]
        return weight, bias

    # --- the shared step --------------------------------------------------------------------------------------
    def _metrics_on(self, device: torch.device) -> None:
        if device != self._metrics_device:
            for metric in self._metrics.values():
                if device.type == "mps":  # no float64 there
                    metric.set_dtype(torch.float32)
                metric.to(device)
            self._metrics_device = device

    def penalty(self) -> torch.Tensor | float:
        """``l2 / 2 * ||W||^2 + l1 * |W|_1`` over the weights (every parameter but the biases)."""
        l2, l1 = self.l2, self.hparams.l1
        if not (l2 or l1):
            return 0.0
        weights = [p for name, p in self.named_parameters() if not name.endswith("bias")]
        total = 0.0
        if l2:
            total = total + l2 / 2 * sum(w.pow(2).sum() for w in weights)
        if l1:
            total = total + l1 * sum(w.abs().sum() for w in weights)
        return total

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]  # streamed batches carry their global row index third
        z, t = self.scale_inputs(x), self.scale_targets(y)
        outputs = self.net(z)
        loss = self.compute_loss(outputs, t)
        if self._newton is not None:
            self._feed_newton(z, t, stage)
        if stage != "train" or not self._counted:  # L-BFGS: count the loss at the step's starting point only
            self._metrics_on(loss.device)  # in the targets' own units
            self._metrics[stage].update(*self.metric_inputs(self.unscale_outputs(outputs.detach()), y),
                                        loss=loss.detach())
            self._updated.add(stage)
        if stage != "train":
            return loss
        self._counted = True
        if self._rows_per_process:  # DDP averages the processes' means: weigh each by its share of the rows
            loss = loss * (len(x) / self._rows_per_process)
        if self._global_loss:  # same value on every process (its line search must decide alike), own gradient
            loss = loss + (self.trainer.strategy.reduce(loss.detach(), reduce_op="mean") - loss.detach())
        penalty = self.penalty()
        return loss + penalty if torch.is_tensor(penalty) else loss  # no l1 or l2: no node in the graph

    def _feed_newton(self, z: torch.Tensor, t: torch.Tensor, stage: str) -> None:
        """The batch's exact sums for Newton's pass (training), or, while ``l2 auto`` is choosing, the validation
        loss of the grid point just solved; ``z`` and ``t`` are the scaled inputs and targets the step used."""
        newton = self._newton
        with torch.no_grad():
            if stage == "train":
                newton.add(z, t)
            elif stage == "val" and newton.searching and not self.trainer.sanity_checking:
                newton.add_validation(z, t)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._counted = False

    def _epoch_values(self, stage: str) -> dict[str, float | torch.Tensor] | None:
        """The stage's loss and metrics over the epoch's batches (``None`` if it had none); resets them."""
        if stage not in self._updated:
            return None
        self._updated.discard(stage)
        metrics = self._metrics[stage]
        values = {f"{stage}_{name}": value for name, value in metrics.compute().items()}
        metrics.reset()
        return values

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's epoch loss and metrics once, as ``{stage}_loss``, ``{stage}_<metric>``.

        The torchmetrics objects accumulate over the epoch's batches (weighted by rows) and sync across
        processes in ``compute()``, so the values are final here. ``validate`` and ``test`` hand them to
        ``self.log`` (Lightning returns and prints them). During ``fit`` they go straight to
        ``trainer.callback_metrics`` (what checkpointing, early stopping and the callbacks read),
        ``trainer.logged_metrics``, ``trainer.progress_bar_metrics`` (the losses and the main metric) and the
        loggers, at the step and with the ``epoch`` key that Lightning's own logging uses (the epoch's last
        optimizer step, counted from 0, for train and validation values alike): ``self.log`` stores
        every value in a result collection, moves and reduces it, and costs ~0.3 ms per key, more than a whole
        training step on the seed data (benchmarks/README.md).
        """
        values = self._epoch_values(stage)
        if values is None:
            return
        trainer = self.trainer
        if trainer.state.fn is not TrainerFn.FITTING:
            self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True)  # already synced: a no-op mean
            return
        scalars = {name: float(value) for name, value in values.items()}
        # what the callbacks read are tensors (Lightning's own logging leaves them so); the trainer's metric
        # dicts are properties that recompute from its result collection: each is read once
        tensors = {name: torch.tensor(value, dtype=torch.float32) for name, value in scalars.items()}
        trainer.callback_metrics.update(tensors)
        if trainer.sanity_checking:  # Lightning logs nothing from the sanity check either
            return
        # what self.log(..., prog_bar=True) would leave there: the losses and the main metric, as numbers
        trainer.progress_bar_metrics.update({k: v for k, v in scalars.items()
                                             if k.split("_", 1)[1] in PROGRESS_METRICS})
        logged = trainer.logged_metrics
        logged.update(tensors)
        logged["epoch"] = torch.tensor(float(trainer.current_epoch))
        if trainer.loggers:  # the epoch's train and validation values go to the loggers together, once
            step = max(trainer.global_step - 1, 0)
            if self._unlogged and self._unlogged[0] != step:
                self._write_logs()
            self._unlogged = (step, {**(self._unlogged[1] if self._unlogged else {}), **scalars,
                                     "epoch": trainer.current_epoch})
            if stage == "val":  # the epoch's record is complete: to the loggers before any checkpoint of it
                self._write_logs()

    def _write_logs(self) -> None:
        """Hand the values collected since the last call to the loggers, as one record at their step."""
        if self._unlogged:
            (step, scalars), self._unlogged = self._unlogged, None
            for logger in self.trainer.loggers:
                logger.log_metrics(scalars, step=step)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # the epoch's training values as soon as its last batch is done: the callbacks' on_train_epoch_end
        # (checkpoints, early stopping, progress bars) run before the module's and would see the last epoch's
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_epoch("train")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # an epoch cut short (max_steps): its values are still there
        self._write_logs()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self._newton is not None and not self.trainer.sanity_checking:
            self._newton.end_validation()

    @property
    def l2(self) -> float:
        """The strength of the L2 penalty in force: ``--model.l2``, its default, or what ``auto`` has chosen
        (while it is choosing, the grid point being solved)."""
        return self._newton.l2 if self._newton is not None else self._l2

    @l2.setter
    def l2(self, value: float) -> None:
        self._l2 = value

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if self._newton is not None:  # the epoch's last batch ends the pass with a step
            self._newton.due = batch_idx + 1 >= self.trainer.num_training_batches
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Predictions in the targets' units (class probabilities for classification) for a batch of inputs in
        their own units: a tensor, or a sequence whose first item is (a ``TensorDataset``'s batches, with or
        without targets; the datamodules' ``(x, row)``)."""
        return self.predict_outputs(self(batch if torch.is_tensor(batch) else batch[0]))

    def to_torchscript(self, file_path=None, method: str | None = "trace", example_inputs=None, **kwargs):
        """``forward`` as TorchScript, traced (``example_inputs`` default: one row of zeros). Scripting cannot
        compile a LightningModule (its ``hparams``), and ``torch.jit.trace(model, x)`` itself stops at Lightning's
        ``trainer`` property, which raises ``RuntimeError`` on a model without a Trainer: trace through this
        method. TorchScript is deprecated in PyTorch, and this method in Lightning: ``lit-regression export``
        writes ONNX, or with ``--format torch`` a ``torch.export`` program."""
        if method != "trace":
            raise InputError(f"to_torchscript(method={method!r}): a lit_regression model is traced, not scripted "
                             "(TorchScript cannot compile a LightningModule's hparams); use method='trace'")
        if example_inputs is None:
            example_inputs = torch.zeros(1, int(self.hparams.n_features), dtype=self.dtype, device=self.device)
        return super().to_torchscript(file_path, "trace", example_inputs, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, with one message, a checkpoint of another model family or shape, or with non-finite weights.
        A checkpoint from before the scaling was the model's gets it from the datamodule state it carries."""
        from lit_regression.checkpointing import check_compatible

        saved = checkpoint.get("state_dict")
        if isinstance(saved, dict) and not any(name in saved for name in self.scaling_buffers()):
            scaling = {**{name: b.detach().cpu() for name, b in self.scaling_buffers().items()},
                       **_scaling_of_old_checkpoint(checkpoint, self.scaling_buffers())}
            saved.update(scaling)
        check_compatible(self, checkpoint)

    # --- the objective and its optimizer ----------------------------------------------------------------------
    def default_l2(self, n_train: int) -> float:
        """``l2`` when none is given; LogisticRegression overrides it."""
        return 0.0

    @property
    def _datamodule(self):
        """The trainer's datamodule; ``None`` outside a trainer or without one."""
        return self.trainer.datamodule if self._trainer is not None else None

    def on_fit_start(self) -> None:
        # after a resumed fit's checkpoint is loaded: its datamodule then has the saved preprocessing, so a
        # streamed table is not read again for it (and the values are the checkpoint's own)
        scaling = getattr(self._datamodule, "scaling", None)
        if scaling is not None:
            self.set_scaling(scaling())

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.l2 in (None, "auto"):
            n_train = getattr(self._datamodule, "n_train", None)
            if not n_train and (self.default_l2(1) or self.hparams.l2 == "auto"):
                what = "the grid of l2 auto is" if self.hparams.l2 == "auto" else \
                    f"the default {type(self).__name__} penalty is"
                raise InputError(f"model l2={self.hparams.l2!r}: {what} scaled by 1 / n_train, but the training rows "
                                 "cannot be counted without a lit_regression datamodule; give --model.l2")
            self.l2 = self.default_l2(n_train or 1)

    def smooth(self) -> bool:
        """Whether the objective has a gradient everywhere (no L1 term), as L-BFGS needs."""
        return self.hparams.l1 == 0 and self.hparams.get("loss", "mse") != "l1"

    def newton_loss(self) -> str | None:
        """The loss, as :data:`~lit_regression.optimum.LOSS_KINDS` names it, when Newton's method can minimise
        this model's objective (one affine map, a smooth loss, no L1 term); ``None`` when it cannot."""
        return None

    def solver(self) -> tuple[str, str]:
        """The optimizer ``configure_optimizers`` builds (``optimizer``, with ``auto`` resolved) and why."""
        name = self.hparams.optimizer
        if name != "auto":
            return name, "as model.optimizer says"
        size = sum(p.numel() for p in self.parameters())
        if self.newton_loss() is None:
            why = ("the model is not one affine map" if self.linear_parameters() is None else
                   "the objective is not smooth")
        elif self.hparams.weight_decay or self.hparams.lr:
            why = f"{'weight_decay' if self.hparams.weight_decay else 'lr'} is set, for gradient steps"
        elif size > NEWTON_MAX_PARAMETERS:
            why = f"{count(size, 'parameter')}, above Newton's {NEWTON_MAX_PARAMETERS}"
        else:
            return "newton", (f"auto: a convex objective with {count(size, 'parameter')}, solved exactly in passes "
                              "over the batches")
        if getattr(self._datamodule, "full_batch", False) and self.smooth():
            return "lbfgs", f"auto: {why}; one batch per epoch and a smooth objective"
        return "adam", f"auto: {why}; " + ("an L1 term" if not self.smooth() else "mini-batches")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        name, why = self.solver()
        if name == "newton" and self._trainer is not None and self.trainer.strategy.root_device.type == "mps":
            why += "; its sums in float64 on the CPU, as MPS has no float64"
        say(f"solver: {name} ({why})")
        decay = self.hparams.weight_decay
        self._newton = None
        if name == "newton":
            return self._newton_optimizer()
        if self.hparams.l2 == "auto":
            raise InputError(f"model l2='auto' is chosen by the newton solver's passes, not by {name}: leave "
                             "--model.optimizer at auto or set it to newton")
        lr = self.hparams.lr if self.hparams.lr is not None else DEFAULT_LR[name]
        if name == "lbfgs":
            if decay:
                raise InputError(f"model weight_decay={decay!r}: L-BFGS has no weight decay; use --model.l2")
            # no stop on an unchanged loss: in float32 it goes flat before the parameters settle; the Convergence
            # callback stops the fit on the gradient instead
            return torch.optim.LBFGS(self.parameters(), lr=lr, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                     tolerance_change=0.0, history_size=20)
        if name == "adam":
            return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=decay)
        return torch.optim.SGD(self.parameters(), lr=lr, weight_decay=decay)

    def _newton_optimizer(self) -> torch.optim.Optimizer:
        from lit_regression.newton import Newton, l2_grid

        kind = self.newton_loss()
        if kind is None:
            raise InputError(f"model optimizer='newton' needs one affine map and a smooth loss (mse or huber, no l1): "
                             f"{type(self).__name__} with these settings is not; use adam or lbfgs")
        for name in ("lr", "weight_decay"):
            if self.hparams[name]:
                raise InputError(f"model {name}={self.hparams[name]!r}: Newton's method takes no {name}; "
                                 "leave it out (use --model.l2 for a penalty)")
        trainer = self._trainer
        reduce = None
        if trainer is not None and trainer.world_size > 1:
            strategy = trainer.strategy
            reduce = lambda t: strategy.reduce(t, reduce_op="sum")  # noqa: E731
        grid = None
        if self.hparams.l2 == "auto":
            self._check_validated_every_epoch()
            grid = l2_grid(getattr(self._datamodule, "n_train", None) or 1)
        self._newton = Newton(*self.linear_parameters(), kind=kind, l2=self.l2, reduce=reduce, grid=grid)
        return self._newton

    def _check_validated_every_epoch(self) -> None:
        """l2 auto scores each l2 on the validation rows: the data must have some, validated every epoch."""
        trainer, datamodule = self._trainer, self._datamodule
        loader = datamodule.val_dataloader() if datamodule is not None else None
        rows = bool(loader) and len(loader) > 0 and trainer.limit_val_batches != 0
        if not rows or trainer.check_val_every_n_epoch != 1:
            why = ("the data have no validation rows" if not rows else
                   f"trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch} validates less often")
            raise InputError(f"model l2='auto' scores each l2 on the validation rows after every pass, but {why}: "
                             "hold some out (data.val_size or data.val_fraction) or give --model.l2 a number")

    def on_train_epoch_start(self) -> None:
        if self._newton is not None:
            self._newton.discard()  # an epoch cut short (max_steps) left its sums: a pass starts from nothing

    def on_train_start(self) -> None:
        trainer = self.trainer
        self._global_loss = trainer.world_size > 1 and any(isinstance(o, torch.optim.LBFGS) for o in trainer.optimizers)
        # full batches under DDP are not padded, so the shards may differ by a row: scaling each process's mean
        # by rows / (n_train / world_size) makes the average over processes the mean over all rows, exactly
        datamodule = trainer.datamodule
        full = trainer.world_size > 1 and getattr(datamodule, "full_batch", False) and datamodule.n_train
        self._rows_per_process = datamodule.n_train / trainer.world_size if full else 0.0

    def parameter_axes(self) -> dict[str, tuple[str, ...]]:
        """What each axis of the learned parameters stands for, by ``named_parameters`` name: ``inputs`` (the
        model's input columns), ``outputs`` (the targets, or the logits of the classes) or ``hidden`` (the units of
        a hidden layer); the parameter report labels the values with it (``linear1.weight[hidden 3, bmi]``). A
        parameter left out is labelled by position."""
        return {}

    def linear_parameters(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(weight, bias)`` of shape ``(n_outputs, n_features)`` and ``(n_outputs,)`` for models that are one
        affine map, else ``None``."""
        return None


class MeanLoss(Metric):
    """``{"loss": ...}``, the mean of the batch losses weighted by their rows: ``MeanMetric`` without its
    per-update NaN check and broadcasting (a non-finite loss stops training in FiniteCheck anyway), which cost
    more than the step on small data; updated as the task metrics are, ``update(outputs, targets, loss=...)``."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("rows", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        self.total += loss.float() * len(target)
        self.rows += len(target)

    def compute(self) -> dict[str, float]:
        total, rows = torch.stack([self.total, self.rows]).tolist()
        return {"loss": total / rows}


def _scaling_of_old_checkpoint(checkpoint: dict, buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scaling that a checkpoint written before the scaling was the model's applied in its datamodule (the
    table datamodule's state: ``feature_mean`` ...), as buffer values; empty where it has none."""
    names = {"input_mean": "feature_mean", "input_scale": "feature_scale", "target_mean": "target_mean",
             "target_scale": "target_scale"}
    for state in checkpoint.values():
        if isinstance(state, dict) and "feature_mean" in state and "features" in state:
            return {name: torch.tensor(state[key], dtype=buffers[name].dtype) for name, key in names.items()
                    if name in buffers and state.get(key) is not None}
    return {}
