"""`histoclr pretrain`: SimCLR on histology tiles with stain-aware views and label-free checks.

- :mod:`histoclr.pretrain.dataset`: tiles from manifests, slide-level held-out split, the dataset.
- :mod:`histoclr.pretrain.diagnostics`: held-out ranking vs random init, embedding map, montage.
- :mod:`histoclr.pretrain.run`: the recipe tying them to :class:`histoclr.ssl.trainer.SimCLRTrainer`.
"""
