"""Canonical JSON and content hashes, shared by the catalog and the pipelines.

Two parameter sets that mean the same thing (same keys and values, any key order, tuples or
lists, numpy or Python scalars) give the same canonical JSON and therefore the same hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Set
from typing import Any

__all__ = ["canonical_json", "content_hash", "jsonable"]


def jsonable(obj: Any) -> Any:
    """Return ``obj`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Tuples become lists, sets become sorted lists, numpy scalars and arrays their Python
    equivalents, paths strings. NaN and infinities are refused (they have no JSON form).

    Raises
    ------
    TypeError
        For an object with no JSON form, or a mapping key that is not a string.
    ValueError
        For a non-finite float.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if type(obj) is dict and all(type(k) is str and type(v) is str for k, v in obj.items()):
        return dict(obj)  # fast path: the usual inputs mapping
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} has no JSON form")
        return float(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}: {key!r}")
            out[key] = jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Set):
        return sorted((jsonable(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalars and arrays
        return jsonable(obj.tolist())
    raise TypeError(f"{type(obj).__name__} has no JSON form: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Canonical JSON text of ``obj``: sorted keys, no whitespace, UTF-8 characters kept.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": (1.5, "x")})
    '{"a":[1.5,"x"],"b":1}'
    """
    return json.dumps(
        jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_hash(obj: Any) -> str:
    """SHA-256 hex digest of ``obj``.

    Bytes-like objects are hashed as they are (file contents); anything else is hashed through
    :func:`canonical_json` (parameters, input dictionaries).
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return hashlib.sha256(obj).hexdigest()
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
