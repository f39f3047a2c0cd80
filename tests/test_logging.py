"""What ``fit`` logs: the epoch metrics go to the loggers and ``trainer.callback_metrics`` without ``self.log`` (it
is the costliest part of a small epoch); these tests hold that path to what Lightning's own logging produces."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_regression.models.base import LitModel
from conftest import fit_config, run_cli, versions

EPOCHS = 12


def events(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of every scalar of a run."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def lightning_log_epoch(self, stage: str) -> None:
    """The reference: every value through ``self.log_dict``, Lightning's own epoch logging."""
    values = self._epoch_values(stage)
    if values is None:
        return
    self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True)


@pytest.mark.parametrize("config", ["line_random_split.yaml", "breast_cancer.yaml"])
def test_fit_logs_what_self_log_would(config, tmp_path, monkeypatch):
    extra = ("--trainer.max_epochs", str(EPOCHS), "--plots.enabled", "false", "--report.enabled", "false",
             "--trainer.log_every_n_steps", "1")
    ours = fit_config(config, tmp_path / "ours", *extra)
    monkeypatch.setattr(LitModel, "_log_epoch", lightning_log_epoch)
    reference = fit_config(config, tmp_path / "reference", *extra)
    got, expected = events(versions(tmp_path / "ours")[0]), events(versions(tmp_path / "reference")[0])
    assert set(got) == set(expected) and {"train_loss", "val_loss"} <= set(got)
    assert "epoch" not in got  # the logger leaves Lightning's epoch-against-step chart out
    for tag in expected:
        assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag  # the same steps
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in expected[tag]], rel=1e-6), tag
    assert len(got["val_loss"]) == EPOCHS
    # what checkpointing read: the same best epoch and score
    ours_ckpt, reference_ckpt = ours.trainer.checkpoint_callback, reference.trainer.checkpoint_callback
    assert float(ours_ckpt.best_model_score) == pytest.approx(float(reference_ckpt.best_model_score), rel=1e-6)
    assert ours_ckpt.best_model_path.rsplit("/", 1)[-1] == reference_ckpt.best_model_path.rsplit("/", 1)[-1]


def test_early_stopping_sees_the_validation_metrics(root):
    cli = fit_config("line_two_layer.yaml", root, "--trainer.max_epochs", "2000",
                     "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val_loss",
                     "--trainer.callbacks.patience", "3", "--trainer.callbacks.min_delta", "0.01",
                     "--plots.enabled", "false")
    assert 3 < cli.trainer.current_epoch < 2000  # stopped by the callback, not by max_epochs
    (stopper,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "EarlyStopping"]
    assert stopper.stopped_epoch == cli.trainer.current_epoch - 1 and stopper.wait_count == 3


def test_validate_and_test_still_return_and_print_their_metrics(root, capsys):
    fit = fit_config("line_linear.yaml", root, "--trainer.max_epochs", "5", "--plots.enabled", "false")
    capsys.readouterr()
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    tested = run_cli("test", "--ckpt_path", ckpt, root=root)
    assert "test_loss" in capsys.readouterr().out  # Lightning's results table
    assert set(tested.trainer.logged_metrics) >= {"test_loss", "test_mae", "test_r2"}
    assert torch.is_tensor(tested.trainer.callback_metrics["test_loss"])


def test_train_metrics_are_off_by_default_and_can_be_asked_for(root):
    cli = fit_config("line_random_split.yaml", root, "--trainer.max_epochs", "3", "--plots.enabled", "false")
    tags = set(events(versions(root)[0]))
    assert {"train_loss", "val_loss", "val_mae", "val_r2"} <= tags
    assert not {t for t in tags if t.startswith("train_") and t != "train_loss"}
    fit_config("line_random_split.yaml", root, "--trainer.max_epochs", "3", "--plots.enabled", "false",
               "--model.init_args.train_metrics", "true")
    assert {"train_mae", "train_mse", "train_rmse", "train_r2"} <= set(events(versions(root)[1]))
    # the metric objects hold no weights: a checkpoint of either kind serves the other
    tested = run_cli("test", "--ckpt_path", cli.trainer.checkpoint_callback.last_model_path,
                     "--model.init_args.train_metrics", "true", root=root)
    assert "test_r2" in tested.trainer.callback_metrics


def test_plateau_scheduler_reads_the_validation_loss(root):
    # mode max: a falling val_loss never "improves", so the rate is cut after every `patience` epochs
    cli = fit_config("line_linear.yaml", root, "--trainer.max_epochs", "6", "--plots.enabled", "false",
                     "--lr_scheduler", "ReduceLROnPlateau", "--lr_scheduler.monitor", "val_loss",
                     "--lr_scheduler.mode", "max", "--lr_scheduler.patience", "0", "--lr_scheduler.factor", "0.5")
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**5)

