"""BIDS entities: validation of user-supplied values and derivative file names.

Every participant, session and label value passes :func:`check_entity` before it reaches a
path, a store key or a query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from lakepipe.errors import InputError

_SAFE = re.compile(r"^[A-Za-z0-9]+$")
_FILENAME = re.compile(r"(?P<key>[a-zA-Z]+)-(?P<value>[A-Za-z0-9]+)")

#: Entity order used for every file lakepipe writes (BIDS order, then derivative entities).
ENTITY_ORDER = ("sub", "ses", "space", "res", "label", "cohort", "method", "atlas", "seed", "desc")


def check_entity(value: str, entity: str = "label", source: str | None = None) -> str:
    """Return ``value`` stripped of a ``sub-``/``ses-`` style prefix if it is BIDS-safe.

    BIDS entity values are alphanumeric only; anything else (``../x``, spaces, slashes, ``_``)
    is refused with :class:`InputError`.
    """
    if not isinstance(value, str):
        value = str(value)
    prefix = f"{entity}-"
    if value.startswith(prefix):
        value = value[len(prefix) :]
    if not _SAFE.match(value):
        raise InputError(f"{entity} value {value!r} is not BIDS-safe (letters and digits only)", source)
    return value


def parse_entities(filename: str) -> dict[str, str]:
    """Entities of a BIDS file name, e.g. ``sub-01_ses-1_label-x_mask.nii.gz`` -> dict."""
    stem = filename.split(".")[0]
    parts = stem.split("_")
    out: dict[str, str] = {}
    for part in parts[:-1] if len(parts) > 1 else parts:
        m = _FILENAME.fullmatch(part)
        if m:
            out[m["key"]] = m["value"]
    out["suffix"] = parts[-1] if "-" not in parts[-1] else ""
    return out


def bids_name(entities: Mapping[str, str | None], suffix: str, extension: str) -> str:
    """Build a BIDS-derivative file name in :data:`ENTITY_ORDER`; ``None`` values are left out."""
    keys = [k for k in ENTITY_ORDER if entities.get(k)] + [
        k for k in entities if k not in ENTITY_ORDER and entities.get(k)
    ]
    parts = [f"{k}-{check_entity(str(entities[k]), k)}" for k in keys]
    return "_".join(parts + [suffix]) + extension


def subject_dir(participant: str, session: str | None = None) -> str:
    """Relative BIDS folder ``sub-<p>[/ses-<s>]``."""
    path = f"sub-{check_entity(participant, 'sub')}"
    return f"{path}/ses-{check_entity(session, 'ses')}" if session else path
