"""The analysis methods: one module per method, each defining one ``METHOD`` object (see
:mod:`lakepipe.methods.base` for the protocol and :mod:`lakepipe.registry` for how they are found).

Importing this package imports no method; :func:`lakepipe.registry.get_method` imports the one asked for.
"""
