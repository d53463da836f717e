"""DDP on CPU: torchrun with 2 Gloo processes x batch 4 == 1 process x batch 8.

torch's SyncBatchNorm has no CPU implementation, and per-rank BatchNorm statistics differ from
the single-process ones by design, so both runs use the same ResNet-18 with GroupNorm/LayerNorm
in place of BatchNorm (passed through ``SimCLRTrainer(model=...)``). What is compared is then
exactly the distributed machinery: sampler sharding, per-item augmentation seeds, the
all-gathered NT-Xent, DDP gradient averaging, the global-batch lr, and rank-0-only tracking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

WORKER = textwrap.dedent('''
    import json, os, sys
    import numpy as np, torch
    from torch import nn
    from histoclr.config.ssl import ModelConfig, OptimConfig, SSLConfig, TrackingConfig, TrainConfig, ViewsConfig
    from histoclr.ssl.augment import MultiViewTransform, build_views
    from histoclr.ssl.model import SimCLRModel
    from histoclr.ssl.trainer import SimCLRTrainer

    class Blocks(torch.utils.data.Dataset):
        def __init__(self, n):
            rng = np.random.default_rng(5)
            self.images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8).repeat(5, 1).repeat(5, 2)
            self.transform = MultiViewTransform(build_views("natural", image_size=16), 2)
        def __len__(self):
            return len(self.images)
        def __getitem__(self, i):
            return self.transform(self.images[i])

    def without_batchnorm(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.GroupNorm(8, child.num_features))
            elif isinstance(child, nn.BatchNorm1d):
                setattr(module, name, nn.LayerNorm(child.num_features))
            else:
                without_batchnorm(child)
        return module

    out, batch, experiment = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    cfg = SSLConfig(model=ModelConfig("resnet18", 32, 16, 2), optim=OptimConfig(name="lars", lr=2.0, warmup_steps=1),
                    views=ViewsConfig(recipe="natural", image_size=16),
                    train=TrainConfig(max_steps=3, batch_size=batch, num_workers=0, precision="32",
                                      channels_last=False, seed=1, checkpoint_every=0, log_every=1, device="cpu"),
                    tracking=TrackingConfig(experiment=experiment), out_dir=out)
    torch.manual_seed(0)
    model = without_batchnorm(SimCLRModel("resnet18", 32, 16, 2))
    result = SimCLRTrainer(cfg, Blocks(12), model=model).fit()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(result.model.state_dict(), os.path.join(out, "weights.pt"))
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"run_id": result.run_id, "steps": result.metrics["steps"]}, f)
''')


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path, free_port):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    ddp = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(script), str(tmp_path / "ddp"), "4", "ddp"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "8", "single"],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    ddp_out, _ = ddp.communicate(timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.returncode == 0, ddp_out[-3000:]

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = {}
    for name in ("ddp", "single"):
        exp = client.get_experiment_by_name(name)
        found = client.search_runs([exp.experiment_id])
        assert len(found) == 1, f"{name}: {len(found)} MLflow runs"     # rank 0 only
        runs[name] = found[0]
        result = json.loads((tmp_path / name / "result.json").read_text())
        assert result["run_id"] == found[0].info.run_id and result["steps"] == 3
    assert runs["ddp"].data.params["world_size"] == "2"
    assert runs["ddp"].data.params["global_batch"] == runs["single"].data.params["global_batch"] == "8"

    loss = {n: [m.value for m in client.get_metric_history(r.info.run_id, "loss")] for n, r in runs.items()}
    assert len(loss["ddp"]) == 3
    np.testing.assert_allclose(loss["ddp"], loss["single"], rtol=1e-4, atol=1e-5)
    assert loss["single"][0] != loss["single"][2]                              # the model did change
    a = torch.load(tmp_path / "ddp" / "weights.pt")
    b = torch.load(tmp_path / "single" / "weights.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
