"""Nucleus segmentation: annotations, image/mask pairs, crop datasets, metrics, baselines.

Data side (this package's ``annotations``, ``pairs``, ``dataset``, ``metrics``, ``baseline``):

- ``annotations``: read Aperio ImageScope XML / QuPath GeoJSON polygons, rasterise them to
  instance label maps, or read PNG/TIFF label images (``load_instances``).
- ``pairs``: find image/mask pairs and inspect them, choose the labelled subset (the pairs
  manifest itself is :mod:`histoclr.manifests.pairs`).
- ``dataset``: load a pair at a target resolution; random augmented crops for training.
- ``metrics``: Dice, IoU, pixel accuracy and the aggregated Jaccard index (AJI).
- ``baseline``: a classical haematoxylin + Otsu segmentation to compare the networks against.

Modules are imported explicitly (``from histoclr.seg.pairs import discover_pairs``); this file imports
nothing heavy.
"""
