"""The textbook SimCLR experiment on STL-10 with the histoclr core, as in the seeds / UvA tutorial.

    python pipelines/stl10_simclr.py --config configs/stl10/cpu.yaml --data-root DIR [key=value ...]

1. SimCLR pretraining (histoclr's trainer, natural views) on STL-10's unlabeled split, or reuse a
   backbone with ``pretrain.backbone=PATH``. Re-running resumes from the last checkpoint.
2. For each arm (random init, SimCLR, ImageNet weights): features of the train and test splits
   extracted once and cached (``<out_dir>/features/``), then a logistic-regression probe per label
   budget (10, 20, 50, 100, 200, 500 images per class).
3. MLflow, one experiment: a summary run with the bar chart (``linear_eval.png``) and, as its
   children, the pretraining run and one run per arm (metrics ``test_acc_<budget>``). The ImageNet
   arm without weights (offline, no ``eval.imagenet_weights``) is a child run tagged skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from histoclr.config import config_to_dict, flatten, load_config
from histoclr.config.stl10 import STL10Config
from histoclr.errors import HistoclrError, InputFileError
from histoclr.io import atomic_write_json, check_output_dir
from histoclr.ssl.augment import MultiViewTransform, build_views
from histoclr.ssl.linear_eval import (
    encoder_fingerprint,
    extract_features,
    linear_eval_budgets,
    plot_budget_bars,
    subsample_per_class,
)
from histoclr.ssl.model import (
    build_encoder,
    imagenet_state_dict,
    load_backbone,
    load_state_dict_strict,
)
from histoclr.ssl.trainer import SimCLRTrainer
from histoclr.stl10 import STL10Labeled, STL10Views, load_stl10
from histoclr.tracking import check_tracking_uri, start_run


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HistoclrError("eval.device=cuda but no CUDA GPU is available; use eval.device=auto")
    return torch.device(name)


def imagenet_weights_or_reason(cfg: STL10Config):
    """``(state_dict, source, None)`` or ``(None, None, reason)`` for the ImageNet arm."""

    arch, e = cfg.pretrain.model.arch, cfg.eval
    if e.imagenet_weights:
        return imagenet_state_dict(arch, e.imagenet_weights), str(e.imagenet_weights), None
    if not e.imagenet_download:
        return None, None, "no eval.imagenet_weights file and eval.imagenet_download=false"
    try:
        return imagenet_state_dict(arch), f"torchvision {arch} IMAGENET1K_V1", None
    except HistoclrError as err:
        return None, None, str(err)


def pretrain(cfg: STL10Config, parent_run_id: str) -> tuple[Path, str | None]:
    """SimCLR on the unlabeled split (resuming from the last checkpoint); -> (backbone file, run id)."""

    p = cfg.pretrain
    unlabeled = load_stl10(cfg.data.root, "unlabeled", download=cfg.data.download)
    limit = cfg.data.unlabeled_limit
    indices = range(min(limit, len(unlabeled))) if limit else None
    views = MultiViewTransform(build_views(p.views.recipe, image_size=p.views.image_size, **p.views.params),
                               p.views.n_views)
    dataset = STL10Views(unlabeled, views, indices)
    trainer = SimCLRTrainer(p, dataset, extra_params={"dataset": "stl10-unlabeled", "num_images": len(dataset)},
                            extra_tags={"mlflow.parentRunId": parent_run_id, "histoclr.kind": "stl10-pretrain"},
                            preview_images=[dataset.image(i) for i in range(min(6, len(dataset)))])
    result = trainer.fit(resume="auto")
    return Path(result.backbone_path), result.run_id


def arm_encoder(arm: str, cfg: STL10Config, backbone_path: Path | None, imagenet):
    """The frozen encoder of ``arm`` and a description of where its weights come from."""
    import torch

    arch = cfg.pretrain.model.arch
    if arm == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.eval.seed)
            return build_encoder(arch), f"random init (seed {cfg.eval.seed})"
    if arm == "simclr":
        backbone = load_backbone(backbone_path)
        encoder, state, source = build_encoder(backbone.arch), backbone.state_dict, str(backbone_path)
    else:
        encoder, (state, source, _) = build_encoder(arch), imagenet
    try:
        load_state_dict_strict(encoder, state, source=source)
    except ValueError as e:
        raise InputFileError(source, str(e)) from None
    return encoder, source


def run(cfg: STL10Config, echo: Callable[[str], None] = print) -> dict:
    """The whole recipe; returns ``{"parent_run_id", "results", "skipped", "chart"}``."""

    e, out = cfg.eval, Path(cfg.out_dir)
    uri = check_tracking_uri(cfg.tracking_uri)      # cheap checks first: nothing is written if they fail
    check_output_dir(out)
    device = _device(e.device)
    p = cfg.pretrain  # one experiment and one output folder for everything
    p.out_dir = str(out / "pretrain")
    p.tracking.experiment, p.tracking.tracking_uri = cfg.experiment, uri
    p.tracking.run_name = p.tracking.run_name or f"{cfg.run_name}/pretrain"
    # ---- everything that can fail on input, before any run is opened
    train = load_stl10(cfg.data.root, "train", download=cfg.data.download)
    test = load_stl10(cfg.data.root, "test", download=False)
    classes = sorted(set(train.labels.tolist()))
    fewest = min(int((train.labels == c).sum()) for c in classes)
    if max(e.budgets) > fewest:
        raise HistoclrError(f"eval.budgets: {max(e.budgets)} labels per class asked, the train split has {fewest}")
    size = e.image_size or cfg.pretrain.views.image_size
    try:
        test_idx = None if cfg.data.test_per_class is None else \
            subsample_per_class(test.labels, cfg.data.test_per_class, e.seed)
    except ValueError as err:
        raise HistoclrError(f"data.test_per_class: {err}") from None
    splits = {"train": STL10Labeled(train, size), "test": STL10Labeled(test, size, test_idx)}
    imagenet = imagenet_weights_or_reason(cfg) if "imagenet" in e.arms else (None, None, None)
    if imagenet[0] is not None:
        arm_encoder("imagenet", cfg, None, imagenet)  # a mismatched weights file fails here, not mid-run
    if "simclr" in e.arms and cfg.pretrain.backbone:
        arch = load_backbone(cfg.pretrain.backbone, weights=False).arch
        if arch != p.model.arch:
            raise InputFileError(cfg.pretrain.backbone, f"a {arch} backbone, but the arms compare "
                                 f"{p.model.arch}; set pretrain.model.arch={arch}")

    with start_run(cfg.experiment, cfg.run_name, tracking_uri=uri, params=flatten(config_to_dict(cfg)),
                   tags={"histoclr.kind": "stl10-summary"}) as parent:
        pid = parent.run_id
        echo(f"STL-10 recipe: summary run {pid} in experiment {cfg.experiment!r} ({uri})")
        backbone_path, pretrain_run = None, None
        if "simclr" in e.arms:
            if cfg.pretrain.backbone:
                backbone_path = Path(cfg.pretrain.backbone)
                pretrain_run = load_backbone(backbone_path, weights=False).metadata.get("run_id")
                echo(f"reusing backbone {backbone_path} (pretraining run {pretrain_run})")
            else:
                backbone_path, pretrain_run = pretrain(cfg, pid)
        results, skipped = {}, {}
        for arm in e.arms:
            params = {"arm": arm, "arch": cfg.pretrain.model.arch, "budgets": list(e.budgets),
                      "image_size": size, "n_train": len(splits["train"]), "n_test": len(splits["test"]),
                      "weight_decay": e.weight_decay, "max_iter": e.max_iter, "eval_seed": e.seed,
                      "pretrain_run_id": pretrain_run or "none"}
            if arm == "imagenet" and imagenet[2] is not None:
                with start_run(cfg.experiment, f"{cfg.run_name}/{arm}", tracking_uri=uri, parent_run_id=pid,
                               params={**params, "backbone_source": "none"},
                               tags={"histoclr.kind": "stl10-arm", "skipped": "true", "skip_reason": imagenet[2]}):
                    pass
                skipped[arm] = imagenet[2]
                echo(f"[{arm}] skipped: {imagenet[2]}")
                continue
            encoder, source = arm_encoder(arm, cfg, backbone_path, imagenet)
            params["backbone_source"] = source
            with start_run(cfg.experiment, f"{cfg.run_name}/{arm}", tracking_uri=uri, parent_run_id=pid,
                           params=params, tags={"histoclr.kind": "stl10-arm", "skipped": "false"}) as arm_run:
                fp = encoder_fingerprint(encoder)
                feats, cached, t0 = {}, {}, time.perf_counter()
                for split, ds in splits.items():
                    path = out / "features" / f"{arm}-{fp[:12]}-{split}-{size}px.npz"
                    before = path.stat().st_mtime_ns if path.is_file() else None
                    feats[split] = extract_features(
                        encoder, ds, e.batch_size, device, cache_path=path, num_workers=e.num_workers,
                        data_key=f"stl10:{split}:{size}px:test_per_class={cfg.data.test_per_class}:seed={e.seed}",
                        desc=f"{arm} {split} features")
                    cached[split] = before is not None and path.stat().st_mtime_ns == before
                feature_s = time.perf_counter() - t0
                accs = linear_eval_budgets(*feats["train"], *feats["test"], e.budgets, seed=e.seed,
                                           weight_decay=e.weight_decay, max_iter=e.max_iter)
                arm_run.log_metrics({f"test_acc_{b}": a for b, a in accs.items()})
                arm_run.log_metric("feature_time_s", feature_s)
                arm_run.set_tags({"encoder_sha256": fp, "features_cached": str(all(cached.values())).lower()})
            results[arm] = accs
            echo(f"[{arm}] " + "  ".join(f"{b}/class: {100 * a:.1f}%" for b, a in accs.items()))
        chart = plot_budget_bars(results, out / "linear_eval.png", skipped=skipped, chance=1 / len(classes),
                                 title=f"STL-10 linear evaluation ({cfg.pretrain.model.arch}, {size} px)")
        summary = out / "linear_eval.json"
        atomic_write_json(summary, {"results": results, "skipped": skipped, "summary_run_id": pid})
        for path in (chart, summary):
            parent.log_artifact(path)
        parent.log_metrics({f"{arm}_test_acc_{b}": a for arm, accs in results.items() for b, a in accs.items()})
    echo(f"chart: {chart}")
    return {"parent_run_id": pid, "results": results, "skipped": skipped, "chart": chart}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", type=Path, default=Path("configs/stl10/cpu.yaml"))
    ap.add_argument("--data-root", help="folder that holds (or will hold) stl10_binary/ (data.root)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(STL10Config, args.config, args.overrides)
        if args.data_root:
            cfg.data.root = args.data_root
        res = run(cfg)
    except HistoclrError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"summary_run_id": res["parent_run_id"], "results": res["results"],
                      "skipped": res["skipped"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
