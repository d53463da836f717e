"""Encoder (intact torchvision ResNet), SimCLR projection head, and the backbone file.

The encoder is a torchvision ResNet with ``fc = Identity``; its state-dict keys (``conv1.*``,
``bn1.*``, ``layer1.*`` ... ``layer4.*``) load unchanged into torchvision and into
segmentation-models-pytorch ResNet encoders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from histoclr.errors import HistoclrError
from histoclr.io import load_tagged, save_tagged
from histoclr.io import read_torch_file

ENCODER_ARCHS: dict[str, int] = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
BACKBONE_FORMAT = "histoclr-backbone"
BACKBONE_VERSION = 1


def build_encoder(arch: str = "resnet50") -> nn.Module:
    """A randomly initialised torchvision ResNet with ``fc = Identity``.

    Input ``(B, 3, H, W)`` -> features ``(B, D)`` with ``D = ENCODER_ARCHS[arch]``
    (available as ``encoder.out_dim``).
    """
    import torchvision

    if arch not in ENCODER_ARCHS:
        raise ValueError(f"unknown encoder {arch!r}; choose one of {', '.join(ENCODER_ARCHS)}")
    encoder = getattr(torchvision.models, arch)(weights=None)
    encoder.fc = nn.Identity()
    encoder.out_dim = ENCODER_ARCHS[arch]
    return encoder


class ProjectionHead(nn.Module):
    """SimCLR MLP head: ``num_layers`` Linear layers, BatchNorm + ReLU between them (SimCLR v2).

    ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128,
                 num_layers: int = 2, batch_norm: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i in range(num_layers):
            last = i == num_layers - 1
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=not batch_norm or last))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h)


class SimCLRModel(nn.Module):
    """Encoder + projection head. ``forward(x) -> (h, z)`` with ``h: (B, D)``, ``z: (B, out_dim)``."""

    def __init__(self, arch: str = "resnet50", hidden_dim: int = 2048, out_dim: int = 128,
                 num_layers: int = 2, batch_norm: bool = True):
        super().__init__()
        self.arch = arch
        self.encoder = build_encoder(arch)
        self.head = ProjectionHead(self.encoder.out_dim, hidden_dim, out_dim, num_layers, batch_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.head(h)


# --------------------------------------------------------------------------- backbone file
@dataclass
class Backbone:
    """What a backbone file holds: the encoder's state dict and where it came from."""

    arch: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_backbone(path: str | Path, encoder: nn.Module, arch: str,
                  metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the encoder's state dict (torchvision keys, on CPU) and metadata atomically."""

    state = {k: v.detach().cpu().clone() for k, v in _unwrap(encoder).state_dict().items()}
    return save_tagged(path, BACKBONE_FORMAT, BACKBONE_VERSION,
                       {"arch": arch, "state_dict": state, "metadata": dict(metadata or {})})


def load_backbone(path: str | Path, *, weights: bool = True) -> Backbone:
    """Read a backbone file written by :func:`save_backbone` (``weights=False``: the tensors are
    memory-mapped, not read, for a caller that wants only ``arch`` and ``metadata``).

    Raises:
        histoclr.errors.InputFileError: missing file or not a histoclr backbone file.
    """

    payload = load_tagged(path, BACKBONE_FORMAT, BACKBONE_VERSION, "backbone file",
                          "write one with `histoclr pretrain` (its <out_dir>/backbone.pt)", mmap=not weights)
    return Backbone(payload["arch"], payload["state_dict"], payload.get("metadata", {}))


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str = "state dict") -> None:
    """Load ``state_dict`` into ``module`` or raise ``ValueError`` naming the problem keys.

    Missing, unexpected and mis-shaped keys are all reported (never a silent ``strict=False``):
    each kind with its count and its first 10 keys; the full lists are the error's ``missing``,
    ``unexpected`` and ``mismatched`` attributes.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict)
                        if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or mismatched:
        shaped = [f"{k} (file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})" for k in mismatched]
        parts = [_key_summary(n, keys) for n, keys in (("missing", missing), ("unexpected", unexpected),
                                                          ("mis-shaped", shaped)) if keys]
        err = ValueError(f"{source} does not match the {type(module).__name__}: " + "; ".join(parts))
        err.missing, err.unexpected, err.mismatched = missing, unexpected, mismatched
        raise err
    module.load_state_dict(state_dict, strict=True)


def _key_summary(kind: str, keys: list[str], shown: int = 10) -> str:
    """``"3 missing keys: a, b, c"`` or ``"240 missing keys (first 10: a, ..., j, ...)"``."""
    if len(keys) <= shown:
        return f"{len(keys)} {kind} key{'s' if len(keys) > 1 else ''}: {', '.join(keys)}"
    return f"{len(keys)} {kind} keys (first {shown}: {', '.join(keys[:shown])}, ...)"


def imagenet_state_dict(arch: str, weights_path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``arch`` as an encoder state dict (no ``fc.*``).

    From ``weights_path`` when given (a torchvision ``.pth`` file or a histoclr backbone file),
    else torchvision's download/cache. Offline without a cached copy this raises a one-line
    :class:`histoclr.errors.HistoclrError` that says to pass a local file.
    """

    if weights_path is not None:
        weights_path = Path(weights_path)
        sd = read_torch_file(weights_path, "ImageNet weights file",
                             f"give torchvision's {arch} ImageNet .pth (e.g. {arch}-*.pth from its cache)")
        if isinstance(sd, dict) and sd.get("format") == BACKBONE_FORMAT:
            sd = sd["state_dict"]
        elif isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
    else:
        import torchvision

        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        try:
            sd = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # URLError, socket errors, HTTP errors ...
            raise HistoclrError(
                f"ImageNet weights for {arch} could not be downloaded ({type(e).__name__}); "
                f"pass a local file instead, e.g. --imagenet-weights /path/to/{arch}.pth") from None
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DDP / DataParallel
