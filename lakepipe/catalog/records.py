"""Records the catalog stores: :class:`OutputRecord` (one published output) and :class:`RegisterResult`."""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lakepipe._version import __version__
from lakepipe.bids import check_entity
from lakepipe.catalog.hashing import canonical_json, jsonable
from lakepipe.catalog.urls import check_store_uri, contains_credentials
from lakepipe.errors import InputError

__all__ = ["IDENTITY", "KINDS", "STATUSES", "OutputRecord", "RegisterResult", "check_run_id", "to_utc"]

#: What an output can be.
KINDS = ("lesion", "connectome", "atlas", "derivative")
#: Publication states; only ``published`` rows are returned by default.
STATUSES = ("published",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_ENTITIES = {"participant": "sub", "session": "ses", "label": "label"}
#: Fields saying whose output a record is; they are hashed into ``inputs_hash`` with the inputs.
IDENTITY = ("kind", "cohort", "participant", "session", "label", "atlas", "connectome")


def to_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_run_id(value: Any) -> str:
    """Return ``value`` if it is a valid run id (letters, digits, ``_``, ``-``; at most 64)."""
    if not (isinstance(value, str) and _RUN_ID.match(value)):
        raise InputError(f"run id {value!r} is not valid")
    return value


def _check_name(value: Any, what: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise InputError(f"{what} {value!r} is not a safe name (letters, digits, '.', '_', '-'; at most 128)")
    return value


@dataclass(frozen=True, kw_only=True)
class OutputRecord:
    """One published output: what it is, where it is, and how it was made.

    Values are validated and normalised on construction: participant, session and label must be
    BIDS-safe (a ``sub-``/``ses-``/``label-`` prefix is dropped), names are safe identifiers,
    ``store_uri`` is a lake-relative path without credentials, ``params`` and ``inputs`` are
    copied to plain JSON types.

    ``params_hash`` is ``content_hash(params)``. ``inputs_hash`` is
    ``content_hash({"entities": record.entities, "inputs": inputs})``: the inputs *and* whose output
    it is (kind, cohort, participant, session, label, atlas, connectome), so that two participants
    with byte-identical lesion masks remain two outputs instead of one being skipped as a duplicate.
    Use :attr:`skip_key` (or :meth:`Catalog.missing`) rather than recomputing hashes by hand.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    method
        What produced it: ``ingest``, ``parcellate``, ``afnm``, ``fnm``...
    statistic
        Which quantity: ``mask``, ``timeseries``, ``fcgroupz``, ``score``, ``zmap``...
    store_uri
        Zarr store holding the data, relative to the lake root.
    store_index
        Key or integer position of this output inside the store (stored as text).
    params
        Parameters of the computation (JSON-able mapping).
    inputs
        Content hash of each input, by name.
    shape
        Shape of the stored array, if useful.
    created
        Publication time; ``None`` lets :meth:`Catalog.register` stamp the commit time.
    """

    kind: str
    method: str
    statistic: str
    store_uri: str
    cohort: str | None = None
    participant: str | None = None
    session: str | None = None
    label: str | None = None
    atlas: str | None = None
    connectome: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    inputs: Mapping[str, str] = field(default_factory=dict, hash=False)
    store_index: str | None = None
    shape: tuple[int, ...] | None = None
    lakepipe_version: str = field(default_factory=lambda: __version__)
    created: datetime | None = None
    status: str = "published"
    run_id: str | None = None
    params_hash: str = field(init=False)
    inputs_hash: str = field(init=False)
    _params_json: str = field(init=False, repr=False, compare=False, hash=False)
    _inputs_json: str = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if self.kind not in KINDS:
            raise InputError(f"output kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.status not in STATUSES:
            raise InputError(f"output status {self.status!r} is not one of {', '.join(STATUSES)}")
        _check_name(self.method, "method", optional=False)
        _check_name(self.statistic, "statistic", optional=False)
        for name in ("cohort", "atlas", "connectome"):
            _check_name(getattr(self, name), name)
        for name, entity in _ENTITIES.items():
            value = getattr(self, name)
            if value is not None:
                value = check_entity(value, entity)
                if len(value) > 128:
                    raise InputError(f"{name} value is longer than 128 characters")
                put(self, name, value)
        check_store_uri(self.store_uri)
        put(self, "store_index", self._check_index(self.store_index))
        put(self, "shape", self._check_shape(self.shape))
        params, params_json = self._check_mapping(self.params, "params")
        inputs, inputs_json = self._check_mapping(self.inputs, "inputs")
        if not all(isinstance(v, str) for v in inputs.values()):
            raise InputError("inputs must map each input name to its content hash (a string)")
        put(self, "params", params)
        put(self, "inputs", inputs)
        put(self, "_params_json", params_json)
        put(self, "_inputs_json", inputs_json)
        if self.created is not None:
            if not isinstance(self.created, datetime):
                raise InputError(f"created must be a datetime, not {type(self.created).__name__}")
            put(self, "created", to_utc(self.created))
        if self.run_id is not None:
            check_run_id(self.run_id)
        if not isinstance(self.lakepipe_version, str) or not self.lakepipe_version:
            raise InputError("lakepipe_version must be a non-empty string")
        put(self, "params_hash", _sha256(params_json))
        # == content_hash({"entities": self.entities, "inputs": self.inputs}), reusing the JSON text
        entities_json = canonical_json(self.entities)
        put(self, "inputs_hash", _sha256(f'{{"entities":{entities_json},"inputs":{inputs_json}}}'))

    @staticmethod
    def _check_index(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value
        elif not isinstance(value, bool) and hasattr(value, "__index__"):  # int, numpy integers
            text = str(operator.index(value))
        else:
            raise InputError(f"store_index must be a string key or an integer, not {value!r}")
        if not text or len(text) > 256 or contains_credentials(text):
            raise InputError(f"store_index {text[:40]!r} is empty, too long or holds credentials")
        return text

    @staticmethod
    def _check_shape(value: Any) -> tuple[int, ...] | None:
        if value is None:
            return None
        try:
            shape = tuple(int(n) for n in value)
        except (TypeError, ValueError):
            raise InputError(f"shape must be a sequence of integers, not {value!r}") from None
        if any(n < 0 for n in shape):
            raise InputError(f"shape {shape} has a negative length")
        return shape

    @staticmethod
    def _check_mapping(value: Any, what: str) -> tuple[dict[str, Any], str]:
        """Plain-JSON copy of ``value`` and its canonical JSON text."""
        if not isinstance(value, Mapping):
            raise InputError(f"{what} must be a mapping, not {type(value).__name__}")
        try:
            plain = jsonable(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what} cannot be stored as JSON: {exc}") from None
        text = canonical_json(plain)
        if contains_credentials(text):
            raise InputError(f"{what} contain credentials (a URL password or secret); refusing to store them")
        return plain, text

    @property
    def entities(self) -> dict[str, str]:
        """Whose output this is: kind, cohort, participant, session, label, atlas, connectome (set ones)."""
        return {name: getattr(self, name) for name in IDENTITY if getattr(self, name) is not None}

    @property
    def skip_key(self) -> tuple[str, str, str]:
        """``(statistic, inputs_hash, params_hash)``, the key :meth:`Catalog.existing_keys` takes."""
        return (self.statistic, self.inputs_hash, self.params_hash)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The unique key ``(method, statistic, inputs_hash, params_hash)``."""
        return (self.method, self.statistic, self.inputs_hash, self.params_hash)

    def to_row(self) -> dict[str, Any]:
        """Column values for the ``outputs`` table (JSON fields as canonical text)."""
        return {
            "kind": self.kind,
            "method": self.method,
            "cohort": self.cohort,
            "participant": self.participant,
            "session": self.session,
            "label": self.label,
            "atlas": self.atlas,
            "connectome": self.connectome,
            "statistic": self.statistic,
            "params": self._params_json,
            "params_hash": self.params_hash,
            "inputs": self._inputs_json,
            "inputs_hash": self.inputs_hash,
            "store_uri": self.store_uri,
            "store_index": self.store_index,
            "shape": None if self.shape is None else canonical_json(list(self.shape)),
            "lakepipe_version": self.lakepipe_version,
            "created": self.created,
            "status": self.status,
            "run_id": self.run_id,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OutputRecord:
        """Rebuild a record from an ``outputs`` row or a :meth:`Catalog.get` dictionary."""

        def parsed(value: Any) -> Any:
            return json.loads(value) if isinstance(value, str) else value

        names = {f.name for f in cls.__dataclass_fields__.values() if f.init}
        values = {k: row[k] for k in names if k in row}
        for name in ("params", "inputs", "shape"):
            if name in values:
                values[name] = parsed(values[name])
        if values.get("params") is None:
            values["params"] = {}
        if values.get("inputs") is None:
            values["inputs"] = {}
        return cls(**values)


@dataclass(frozen=True)
class RegisterResult:
    """Outcome of :meth:`Catalog.register`.

    Attributes
    ----------
    inserted
        Rows newly published by this call.
    skipped
        Records whose key was already published (or repeated within the call).
    ids
        Row ids of the inserted (and replaced) rows, ascending.
    replaced
        Rows that replaced an already published output of the same key (``replace=True``).
    """

    inserted: int
    skipped: int
    ids: tuple[int, ...] = ()
    replaced: int = 0

    @property
    def total(self) -> int:
        """Records passed to :meth:`Catalog.register`."""
        return self.inserted + self.skipped + self.replaced

    def __str__(self) -> str:
        text = f"registered {self.inserted} outputs, skipped {self.skipped} already published"
        return text + (f", replaced {self.replaced}" if self.replaced else "")


def as_records(records: Sequence[OutputRecord] | Any) -> list[OutputRecord]:
    """List of records, refusing anything that is not an :class:`OutputRecord`."""
    out = list(records)
    for rec in out:
        if not isinstance(rec, OutputRecord):
            raise TypeError(f"expected OutputRecord, got {type(rec).__name__}")
    return out
