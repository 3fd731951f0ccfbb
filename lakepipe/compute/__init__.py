"""Pure-numpy compute kernels: correlation, group FC, lesion weights, FNM sums and resampling.

Nothing here touches files, Dask or the catalog; pipelines import the submodules they need
(``lakepipe.compute.correlation``, ``.groupfc``, ``.weights``, ``.fnm``, ``.resample``).
"""
