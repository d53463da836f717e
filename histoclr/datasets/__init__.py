"""Datasets on disk: data-root manifests (:mod:`histoclr.datasets.manifest`)."""
