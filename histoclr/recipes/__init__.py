"""End-to-end recipes, importable and tested; ``pipelines/*.py`` are their command-line entry points.

- :mod:`~histoclr.recipes.pipeline`: the whole job on one data root, tile -> pretrain -> ablate ->
  report -> final model, each stage the ``histoclr`` command a user would type (``make run``);
- :mod:`~histoclr.recipes.demo`: ``make run`` on the synthetic demo data root;
- :mod:`~histoclr.recipes.stl10`: the textbook SimCLR experiment on STL-10 with linear evaluation;
- :mod:`~histoclr.recipes.instances`: boundary-aware targets against the binary target and the
  classical method (nucleus instances);
- :mod:`~histoclr.recipes.ablation_results`: the ablation's section of ``docs/results.md``.

Those that report a real run write their section of ``docs/`` with :mod:`histoclr.docs_sections`.
"""
