"""SimCLRTrainer under faults: divergence, poisoned state, changed config on resume, full disk."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from histoclr.errors import InputFileError, OutputFileError, TrainingDiverged
from histoclr.io import save_tagged
from histoclr.ssl.trainer import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    SimCLRTrainer,
    load_checkpoint,
)

_spec = importlib.util.spec_from_file_location("trainer_helpers", Path(__file__).with_name("test_trainer.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
BlockImages, tiny_cfg = _helpers.BlockImages, _helpers.tiny_cfg


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def _poison_at(step: int):
    """An ``on_step`` hook: BatchNorm running statistics turn inf at ``step`` while the loss stays
    finite (train-mode BatchNorm normalises with batch statistics), as after an lr blow-up."""
    def hook(trainer, run):
        if trainer.step == step:
            trainer.model.encoder.bn1.running_var.fill_(float("inf"))
    return hook


def test_nonfinite_state_is_never_checkpointed_and_the_run_restarts_with_a_new_lr(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints" / "last.pt"
    trainer = SimCLRTrainer(tiny_cfg(tmp_path, max_steps=6, checkpoint_every=2), BlockImages(8),
                            on_step=_poison_at(3))
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert msg.startswith("training diverged by step 4: non-finite values in 1 tensor(s), e.g. "
                          "encoder.bn1.running_var; not saved as a checkpoint; lr ")
    assert msg.endswith(f"the last finite checkpoint is {ckpt} (step 2): lower optim.lr and restart "
                        f"from it with --resume {ckpt} --resume-with-new-config")
    assert "precision" not in msg                      # the run is already at precision 32
    kept = load_checkpoint(ckpt)
    assert kept["step"] == 2 and torch.isfinite(kept["model"]["encoder.bn1.running_var"]).all()
    assert _client().get_run(trainer.run_id).info.status == "FAILED"
    assert not (tmp_path / "backbone.pt").exists()

    # the same resume with a new learning rate is refused, listing what changed ...
    lower = tiny_cfg(tmp_path, max_steps=6, checkpoint_every=2)
    lower.optim.lr = 0.5
    with pytest.raises(InputFileError) as e:
        SimCLRTrainer(lower, BlockImages(8)).fit(resume="auto")
    assert str(e.value) == (f"{ckpt}: written with another configuration (optim.lr 1.0 -> 0.5); resume "
                            "with the checkpoint's settings, or pass --resume-with-new-config to "
                            "continue with the new ones")
    assert load_checkpoint(ckpt)["step"] == 2

    # ... and allowed deliberately: the new lr applies from step 3, the change is logged
    with caplog.at_level(logging.WARNING, logger="histoclr"):
        resumed = SimCLRTrainer(lower, BlockImages(8)).fit(resume="auto", allow_new_config=True)
    assert f"resuming {ckpt} at step 2 with a changed configuration: optim.lr 1.0 -> 0.5" in caplog.text
    assert resumed.run_id == trainer.run_id and resumed.metrics["steps"] == 6
    run = _client().get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_with_new_config.step2"] == "optim.lr 1.0 -> 0.5"
    # step 3 was logged twice in this run: before the divergence and after the resume at half the lr
    old, new = sorted(m.value for m in _client().get_metric_history(run.info.run_id, "lr") if m.step == 3)[::-1]
    assert new == pytest.approx(0.5 * old, rel=1e-6)
    assert load_checkpoint(resumed.checkpoint_path)["config"]["optim"]["lr"] == 0.5


def test_resume_refuses_a_checkpoint_with_nonfinite_state(tmp_path):
    SimCLRTrainer(tiny_cfg(tmp_path, max_steps=1), BlockImages(8)).fit()
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)                           # what an older histoclr could keep
    ckpt["model"]["encoder.layer1.0.bn1.running_var"].fill_(float("nan"))
    save_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    with pytest.raises(InputFileError, match=r"holds non-finite values \(1 tensor\(s\), e.g. "
                                             r"encoder.layer1.0.bn1.running_var\): the run had diverged"):
        SimCLRTrainer(tiny_cfg(tmp_path, max_steps=2), BlockImages(8)).fit(resume="auto")


def test_nan_loss_hint_mentions_precision_only_below_32(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"diverged at step 1: loss is nan; lr .*; no checkpoint "
                                               r"was written: lower optim.lr or use train.precision=32"):
        SimCLRTrainer(tiny_cfg(tmp_path, precision="bf16"), BlockImages(8, nan=True)).fit()
    with pytest.raises(TrainingDiverged) as e:
        SimCLRTrainer(tiny_cfg(tmp_path / "b"), BlockImages(8, nan=True)).fit()
    assert "precision" not in str(e.value)


def test_disk_full_while_checkpointing_names_the_path_and_keeps_the_previous_checkpoint(small_disk):
    out = small_disk("150m") / "run"                    # room for one checkpoint (~90 MB), not two
    trainer = SimCLRTrainer(tiny_cfg(out, max_steps=4, checkpoint_every=2), BlockImages(8))
    with pytest.raises(OutputFileError) as e:
        trainer.fit()
    ckpt = out / "checkpoints" / "last.pt"
    assert str(e.value) == (f"{ckpt}: cannot write the checkpoint of step 4 (No space left on device); "
                            f"{ckpt} (step 2) is kept: free some space and resume from it with --resume {ckpt}")
    assert load_checkpoint(ckpt)["step"] == 2
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
    assert _client().get_run(trainer.run_id).info.status == "FAILED"


def test_corrupt_resume_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(InputFileError) as e:
        SimCLRTrainer(tiny_cfg(tmp_path / "run"), BlockImages(8)).fit(resume=bad)
    assert str(e.value).startswith(f"{bad}: not a SimCLR checkpoint: not a complete PyTorch file")
    assert not (tmp_path / "run").exists()
