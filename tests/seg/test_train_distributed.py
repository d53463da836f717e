"""`finetune-seg` under torchrun on CPU: 2 Gloo processes x batch 2 == 1 process x batch 4.

Like the pretraining DDP test, both runs swap BatchNorm for GroupNorm (per-rank BatchNorm statistics
differ from single-process ones by design; torch has no CPU SyncBatchNorm), drop the ASPP dropout
(its random masks depend on how the batch is split) and train with
cross-entropy only (``model.dice_weight=0``: smp's Dice is over the whole batch, so per-rank Dice
differs too). What is compared is the distributed machinery: the sampler's sharding of the crops,
DDP gradient averaging, the sharded whole-image validation, rank-0-only checkpoints and MLflow
run, and resume from the distributed checkpoint after a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from histoclr.seg.synthetic import write_synthetic_pairs

WORKER = textwrap.dedent('''
    import os, sys
    import torch
    from torch import nn
    from histoclr.config.loader import load_config
    from histoclr.config.seg import FinetuneConfig
    from histoclr.seg.train import run_finetune

    def without_batchnorm(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.GroupNorm(1, child.num_features))
            elif isinstance(child, nn.Dropout):
                setattr(module, name, nn.Identity())
            else:
                without_batchnorm(child)

    out, batch, experiment, pairs, crash_after = sys.argv[1:6]
    cfg = load_config(FinetuneConfig, None, [
        f"pairs={pairs}", f"data_root={os.path.dirname(pairs)}", f"out_dir={out}", "seed=3",
        "model.encoder=resnet18", "model.architecture=deeplabv3plus", "model.decoder_channels=16",
        "model.dice_weight=0", "data.mpp=null", "data.crop_size=64", "train.epochs=3",
        "train.steps_per_epoch=1", f"train.batch_size={batch}", "train.lr=0.003", "train.device=cpu",
        "train.threads=1", "train.val_batch_size=2", "train.overlays=1", f"tracking.experiment={experiment}"])

    def crash(row):
        if row["epoch"] == int(crash_after):
            raise SystemExit(3)

    run_finetune(cfg, progress=False, model_hook=without_batchnorm, on_epoch_end=crash)
''')


def _torchrun(script, args, env, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_and_resume_after_a_crash(tmp_path, free_port):
    pairs = str(write_synthetic_pairs(tmp_path / "data", n=5, size=96))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"

    # the 2-process run dies after epoch 2 (both ranks), while the 1-process run goes through
    crashed = _torchrun(script, [str(ddp_dir), "2", "ddp", pairs, "2"], env, free_port())
    single = subprocess.run([sys.executable, str(script), str(single_dir), "4", "single", pairs, "0"],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    crashed_out, _ = crashed.communicate(timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert crashed.returncode != 0, crashed_out[-3000:]
    assert torch.load(ddp_dir / "last.pt", weights_only=True)["epoch"] == 2
    # the same command again resumes from the distributed checkpoint
    resumed = _torchrun(script, [str(ddp_dir), "2", "ddp", pairs, "0"], env, free_port())
    resumed_out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, resumed_out[-3000:]
    assert "resuming from" in resumed_out and "after epoch 2" in resumed_out

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = {}
    for name in ("ddp", "single"):
        found = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert len(found) == 1, f"{name}: {len(found)} MLflow runs"          # rank 0 only, resumed in place
        runs[name] = found[0]
        assert found[0].info.status == "FINISHED"
    p = {n: r.data.params for n, r in runs.items()}
    assert (p["ddp"]["world_size"], p["single"]["world_size"]) == ("2", "1")
    assert p["ddp"]["global_batch"] == p["single"]["global_batch"] == "4"

    hist = {n: {k: [m.value for m in client.get_metric_history(r.info.run_id, k)]
                for k in ("train_loss", "epoch_val_dice", "epoch_val_aji")} for n, r in runs.items()}
    assert len(hist["ddp"]["train_loss"]) == 3
    np.testing.assert_allclose(hist["ddp"]["train_loss"], hist["single"]["train_loss"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hist["ddp"]["epoch_val_dice"], hist["single"]["epoch_val_dice"], rtol=1e-3, atol=1e-4)
    assert hist["single"]["train_loss"][0] != hist["single"]["train_loss"][2]     # the model did change
    a = torch.load(ddp_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(single_dir / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
    # files come from rank 0 only, once: one overlay for the one validation image
    assert sorted(f.name for f in (ddp_dir / "overlays").iterdir()) == ["img0.png"]


def test_resume_with_another_process_count_is_refused(tmp_path):
    from histoclr.config.loader import load_config
    from histoclr.config.seg import FinetuneConfig
    from histoclr.errors import InputFileError
    from histoclr.seg.train import STATE_FORMAT, config_key, run_finetune

    pairs = write_synthetic_pairs(tmp_path / "data", n=3, size=64)
    cfg = load_config(FinetuneConfig, None, [f"pairs={pairs}", f"data_root={pairs.parent}",
                                             f"out_dir={tmp_path / 'run'}", "model.encoder=resnet18",
                                             "data.mpp=null", "data.crop_size=64", "train.device=cpu"])
    (tmp_path / "run").mkdir()
    torch.save({"format": STATE_FORMAT, "config_key": config_key(cfg), "world_size": 2},
               tmp_path / "run" / "last.pt")
    with pytest.raises(InputFileError, match="written by 2 process"):
        run_finetune(cfg, progress=False)


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path, monkeypatch):
    from histoclr import distributed
    from histoclr.config.loader import load_config
    from histoclr.config.seg import FinetuneConfig
    from histoclr.errors import HistoclrError
    from histoclr.seg.train import _run_finetune

    cfg = load_config(FinetuneConfig, None, ["train.sync_batchnorm=true", "train.device=cpu"])
    two_ranks = distributed.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(HistoclrError, match="sync_batchnorm needs CUDA"):
        _run_finetune(cfg, two_ranks, parent_run_id=None, extra_tags=None, progress=False, echo=None,
                      model_hook=None, on_epoch_end=None)
