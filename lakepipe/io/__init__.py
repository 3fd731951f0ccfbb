"""I/O: the lake's storage, readers of source formats and writers of stores and BIDS files."""
