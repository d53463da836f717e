"""The on-disk contracts between stages: versioned CSV manifests, one reader/writer, one rule.

- :mod:`~histoclr.manifests.csvfile`: the versioned CSV every manifest is (``# histoclr-<kind> v<N>``,
  a header, one row per item) and its strictness rule;
- :mod:`~histoclr.manifests.tiles`: ``tiles.csv`` + ``slides.csv``, written by ``histoclr tile``,
  read by pretraining;
- :mod:`~histoclr.manifests.pairs`: the segmentation pairs manifest, written by ``histoclr seg-data``,
  read by fine-tuning, the ablation and prediction checks;
- :mod:`~histoclr.manifests.data`: the data-root manifest (every file with size, sha256, role),
  written and checked by ``histoclr data`` (:mod:`histoclr.dataroot`).

The formats are described for users in ``data_manifests/README.md`` and
``data_manifests/TILE_MANIFEST.md``.
"""
