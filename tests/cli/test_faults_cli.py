"""Faults a careful user meets through the CLI (issue 15): each is one `error:` line, exit 2,
naming the file or URI and what to do, and nothing is lost or left half-written."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from histoclr.cli import cli

_spec = importlib.util.spec_from_file_location(
    "synthetic_tiles", Path(__file__).resolve().parents[1] / "pretrain" / "synthetic_tiles.py")
synthetic_tiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_tiles)

TINY = ["model.arch=resnet18", "model.proj_hidden_dim=32", "model.proj_out_dim=16", "views.image_size=32",
        "train.batch_size=4", "train.num_workers=0", "train.precision=32", "train.device=cpu",
        "train.channels_last=false", "train.log_every=1", "optim.name=adamw", "optim.lr=0.001",
        "data.holdout_fraction=0.34", "diagnostics.batch_size=8", "diagnostics.enabled=false",
        "tracking.experiment=faults", "out_dir=run"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(r) -> str:
    """The single `error:` line of a failed command (exit 2, no traceback)."""
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0][len("error: "):]


@pytest.fixture
def manifest(tmp_path) -> Path:
    return synthetic_tiles.write_manifest(tmp_path / "tiles", {"sa": 4, "sb": 4, "sc": 4}, size=48)


@pytest.fixture
def seg_configs(tmp_path):
    """A fine-tuning config on synthetic pairs and a sweep config over it."""
    from histoclr.seg.synthetic import write_synthetic_pairs

    pairs = write_synthetic_pairs(tmp_path / "data")
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"), "out_dir": str(tmp_path / "ft"),
          "model": {"encoder": "resnet18"}, "data": {"mpp": None, "crop_size": 64},
          "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "overlays": 0, "val_batch_size": 2}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    sweep = {"experiment": "faults-ablation", "sweep_name": "s", "finetune_config": str(tmp_path / "ft.yaml"),
             "inits": ["random"], "freezes": ["none"], "label_fractions": [1.0], "seeds": [0],
             "out_dir": str(tmp_path / "ablation"), "classical_baseline": False}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp_path / "ft.yaml", tmp_path / "sweep.yaml"


# --------------------------------------------------------------------------- 3. tracking server
@pytest.mark.parametrize("command", ["pretrain", "finetune-seg", "ablate"])
def test_unreachable_tracking_server_is_one_line_before_any_work(command, tmp_path, free_port, seg_configs):
    uri = f"http://127.0.0.1:{free_port()}"
    ft, sweep = seg_configs
    args = {"pretrain": ["pretrain", *TINY, "data.manifests=[missing/tiles.csv]"],
            "finetune-seg": ["finetune-seg", "--config", ft, "--no-progress"],
            "ablate": ["ablate", sweep]}[command]
    t0 = time.perf_counter()
    msg = error_line(invoke(*args, "--tracking-uri", uri))
    assert time.perf_counter() - t0 < 60          # seconds, not the minutes of MLflow's retries
    assert msg.startswith(f"MLflow tracking server {uri} is unreachable (") and "--tracking-uri" in msg
    for left in ("run", "ft", "ablation"):            # no output folder, no config.yaml
        assert not (tmp_path / left).exists(), left


# --------------------------------------------------------------------------- 4. output folders
def test_output_folders_that_cannot_be_made_are_one_line(tmp_path, manifest, readonly_dir):
    afile = tmp_path / "afile"
    afile.write_text("x")
    png = tmp_path / "plain.png"
    Image.new("RGB", (64, 64), "white").save(png)
    assert error_line(invoke("tile", png, "--out", afile / "sub", "--assume-mpp", 0.5)) == (
        f"{afile}/sub: cannot create the output folder: {afile} is a file, not a folder")
    assert error_line(invoke("tile", png, "--out", "/proc/histoclr-x")).startswith(
        "/proc/histoclr-x: cannot create the output folder (")
    assert error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", "out_dir=afile")) == (
        "afile: cannot create the output folder: afile is a file, not a folder")
    msg = error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", f"out_dir={readonly_dir}/run"))
    assert msg.startswith(f"{readonly_dir}/run: cannot create the output folder (")
    assert afile.read_text() == "x"


# --------------------------------------------------------------------------- 7. corrupt inputs
@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x03\x04 not really a zip"])
def test_corrupt_files_given_to_the_cli_are_one_line(tmp_path, manifest, seg_configs, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    msg = error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", "--resume", bad))
    assert msg.startswith(f"{bad}: ") and "SimCLR checkpoint" in msg and "last.pt" in msg
    assert not (tmp_path / "run" / "checkpoints").exists()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)        # the same through --resume auto
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(content)
    msg = error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", "--resume", "auto"))
    assert msg.startswith("run/checkpoints/last.pt: ") and "SimCLR checkpoint" in msg and "delete" in msg

    ft, _ = seg_configs
    msg = error_line(invoke("finetune-seg", "--config", ft, "--no-progress", "--init", f"simclr:{bad}"))
    assert msg.startswith(f"{bad}: ") and "backbone file" in msg and "histoclr pretrain" in msg
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    msg = error_line(invoke("predict", "--model", bad, img, "--out", tmp_path / "pred"))
    assert msg.startswith(f"{bad}: ") and ("segmentation model" in msg or "model checkpoint" in msg)


def test_strict_loading_error_is_summarised(tmp_path, seg_configs):
    from histoclr.ssl.model import build_encoder, save_backbone

    enc = build_encoder("resnet18")
    prefixed = save_backbone(tmp_path / "prefixed.pt", enc, "resnet18")
    import torch

    payload = torch.load(prefixed, weights_only=True)
    payload["state_dict"] = {f"module.{k}": v for k, v in payload["state_dict"].items()}
    from histoclr.io import save_tagged

    save_tagged(prefixed, payload.pop("format"), payload.pop("version"), payload)
    ft, _ = seg_configs
    msg = error_line(invoke("finetune-seg", "--config", ft, "--no-progress", "--init", f"simclr:{prefixed}"))
    assert msg.startswith(f"{prefixed}: ") and "missing keys (first 10: " in msg
    assert "unexpected keys (first 10: module." in msg and len(msg) < 1500


# --------------------------------------------------------------------------- configs and options
def test_yaml_syntax_error_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 3\n  batch_size: [4\nmodel: {}\n")
    msg = error_line(invoke("pretrain", "-c", bad))
    assert msg.startswith(f"{bad}: not valid YAML (line 4, column 6: ") and "expected ',' or ']'" in msg


def test_freeze_none_with_stages_is_refused(seg_configs):
    ft, _ = seg_configs
    msg = error_line(invoke("finetune-seg", "--config", ft, "--no-progress", "--freeze", "none,all"))
    assert "'none' stands alone" in msg


def test_jpeg_masks_are_named_with_the_reason(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "testB_3.png")
    Image.new("L", (32, 32)).save(tmp_path / "masks" / "testB_3.jpg")
    r = invoke("seg-data", "check", "--images", tmp_path / "images", "--masks", tmp_path / "masks", "-q")
    assert r.exit_code == 1
    assert (f"PROBLEM  image without mask: {tmp_path / 'images' / 'testB_3.png'} (found "
            f"{tmp_path / 'masks' / 'testB_3.jpg'}, not used: JPEG is lossy") in r.output
    assert "save the masks as PNG" in r.output


# --------------------------------------------------------------------------- 6. empty manifest
def test_manifest_without_tiles_says_so(manifest):
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:2]) + "\n")          # the version line and the header
    msg = error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]"))
    assert msg == f"{manifest}: tile manifest lists no tiles"


# --------------------------------------------------------------------------- 2. and 5. pretraining
@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused_unless_asked(tmp_path, manifest):
    import mlflow

    r = invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", "train.max_steps=2")
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    before, config_before = ckpt.read_bytes(), (tmp_path / "run" / "config.yaml").read_text()
    msg = error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", "--resume", "auto",
                            "train.max_steps=3", "optim.lr=1e9"))
    shown = Path("run") / "checkpoints" / "last.pt"        # out_dir=run, relative to the working folder
    assert msg == (f"{shown}: written with another configuration (optim.lr 0.001 -> 1000000000.0; "
                   "train.max_steps 2 -> 3); resume with the checkpoint's settings, or pass "
                   "--resume-with-new-config to continue with the new ones")
    assert ckpt.read_bytes() == before and (tmp_path / "run" / "config.yaml").read_text() == config_before

    r = invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", "--resume", "auto",
               "--resume-with-new-config", "train.max_steps=3", "optim.lr=0.002")
    assert r.exit_code == 0, r.output
    assert ("warning: resuming " f"{shown} at step 2 with a changed configuration: optim.lr 0.001 -> 0.002; "
            "train.max_steps 2 -> 3") in r.output
    assert "max_steps: 3" in (tmp_path / "run" / "config.yaml").read_text()
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert run.data.tags["resumed_with_new_config.step2"] == "optim.lr 0.001 -> 0.002; train.max_steps 2 -> 3"
    assert run.data.params["optim.lr"] == "0.001"          # the params stay those of the run's start


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(small_disk, manifest):
    out = small_disk("150m") / "run"                     # one checkpoint (~90 MB) fits, two do not
    msg = error_line(invoke("pretrain", *TINY, f"data.manifests=[{manifest}]", f"out_dir={out}",
                            "train.max_steps=6", "train.checkpoint_every=2"))    # step 4 does not fit
    ckpt = out / "checkpoints" / "last.pt"
    assert msg == (f"{ckpt}: cannot write the checkpoint of step 4 (No space left on device); {ckpt} "
                   f"(step 2) is kept: free some space and resume from it with --resume {ckpt}")
    from histoclr.ssl.trainer import load_checkpoint

    assert load_checkpoint(ckpt)["step"] == 2
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
