"""The ``lakepipe`` command line: thin argument parsing over the pipelines."""
