"""Callbacks that Lightning does not call for the hooks they leave alone.

Lightning calls every hook of every callback, at every step and epoch, whether the callback implements it or not:
for each it looks the method up, opens a profiler context and calls it (``_call_callback_hooks``). With the ten
callbacks of a ``lit-regression fit`` that is about 150 calls an epoch, of which some 130 reach ``Callback``'s
empty methods: on the seed data (one batch an epoch, 1 ms of maths) they cost a fifth of the epoch.

The dispatcher skips a hook whose attribute is not callable (``if callable(fn)``), the same check that lets
Lightning's own ``LambdaCallback`` leave hooks out. :class:`OwnHooks` sets the per-step and per-epoch hooks that a
class inherits unchanged from ``Callback`` (empty methods) to ``None`` on that class. Hooks that Lightning calls
directly, without that check (``state_dict``, ``on_save_checkpoint``, ``setup`` ...), are never touched.
"""

from __future__ import annotations

from lightning.pytorch import Callback

# the hooks that the loops call through the dispatcher during fit, validate, test and predict, per step or epoch
PER_STEP_HOOKS = (
    "on_train_epoch_start", "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end",
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start", "on_validation_epoch_end",
    "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
    "on_predict_batch_start", "on_predict_batch_end",
)


class OwnHooks:
    """Mixin, first among the bases of a ``Callback`` subclass: its per-step and per-epoch hooks that are still
    ``Callback``'s empty methods become ``None``, so Lightning passes over them."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in PER_STEP_HOOKS:
            if getattr(cls, name) is getattr(Callback, name):
                setattr(cls, name, None)
