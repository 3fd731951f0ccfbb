"""The parameters of every built-in method, one module per method (the group statistics share one),
importable without the methods themselves: the command line builds its parsers and ``--help`` from
them (see :mod:`lakepipe.methods.params.base`), and each method's ``params_type`` is its class here.
"""
