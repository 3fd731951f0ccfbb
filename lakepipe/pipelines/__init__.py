"""One module per user-facing job: read stores, build Dask graphs, write derivatives, register them."""
