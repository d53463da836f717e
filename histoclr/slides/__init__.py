"""Slides: the slide reader (``reader``, part of the low layer every stage reads slides through)
and tiling on top of it (``inputs``, ``tissue``, ``tiler``, ``qc``; ``synthetic`` for tests).

The tile manifest the tiler writes is :mod:`histoclr.manifests.tiles`.
"""
