"""Group lesion network mapping statistics on the lake (DESIGN 3b), one registered method each:
``sensitivity``, ``specificity``, ``conjunction``, ``symptom``, ``predict``.

Cases and controls are catalog queries (:mod:`.groups`); workers read blocks of the maps from the
derivative stores and run the kernels of :mod:`lakepipe.compute.stats` (:mod:`.tasks`,
:mod:`.permutation`); each result is one derivative store with its catalog records (:mod:`.base`).
"""
