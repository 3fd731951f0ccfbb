"""Which maps a group test runs on: cases and controls chosen by catalog query, checked to be one
consistent set, joined with the participants' clinical table and lesion volumes.

A group query is ``key=value`` pairs separated by commas: ``cohort``, ``label``, ``session`` and
``participants`` select catalog outputs (several values joined with ``+``); any other key is a
column of the cohort's ``participants.tsv`` (``group=case``; values compared as text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lakepipe.catalog import content_hash
from lakepipe.errors import InputError, NotFoundError
from lakepipe.methods.params.stats import LESION_VOLUME

if TYPE_CHECKING:
    from lakepipe.lake import Lake

#: the query keys that select catalog outputs; every other key is a participants.tsv column
CATALOG_KEYS = ("cohort", "label", "session", "participants")
#: the statistic tested by default, per map method
DEFAULT_STATISTIC = {"fnm": "tmap", "afnm": "afnmap"}


@dataclass(frozen=True)
class GroupQuery:
    """A parsed ``--cases``/``--controls`` query."""

    text: str
    catalog: dict[str, tuple[str, ...]] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, what: str) -> GroupQuery:
        """``cohort=stroke,label=acuteinfarct,group=case`` -> a query (``what`` names it in errors)."""
        catalog: dict[str, tuple[str, ...]] = {}
        columns: dict[str, tuple[str, ...]] = {}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise InputError(
                    f"--{what} expects KEY=VALUE pairs separated by commas (e.g. cohort=stroke,label="
                    f"acuteinfarct), got {text!r}"
                )
            values = tuple(v.strip() for v in value.split("+") if v.strip())
            (catalog if key in CATALOG_KEYS else columns)[key] = values
        if "cohort" not in catalog and "participants" not in catalog:
            raise InputError(f"--{what} must name a cohort (cohort=NAME), got {text!r}")
        return cls(str(text), catalog, columns)


@dataclass
class MapSet:
    """The maps of one group test, in order (cases first), with their participants' data.

    Attributes
    ----------
    source, statistic, atlas, connectome
        Which maps: method (``fnm``/``afnm``), statistic, atlas (None for voxel maps), connectome.
    rows
        Their catalog rows (columns of :meth:`Catalog.query`).
    is_case
        (n,) True for the cases' rows.
    table
        One row per map: cohort, participant, session, label, the participants.tsv columns and
        ``lesion_volume`` (mm^3).
    """

    source: str
    statistic: str
    atlas: str | None
    connectome: str
    rows: pd.DataFrame
    is_case: np.ndarray
    table: pd.DataFrame

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def identity(self) -> str:
        """Content hash of exactly these outputs, in this order (what a result depends on)."""
        return content_hash(
            [
                [int(i), str(u), str(x), bool(c)]
                for i, u, x, c in zip(
                    self.rows["id"],
                    self.rows["store_uri"],
                    self.rows["store_index"],
                    self.is_case,
                    strict=True,
                )
            ]
        )

    def values(self, columns: list[str], what: str) -> tuple[np.ndarray, list[str]]:
        """(n, k) float64 values of participants.tsv columns (or ``lesion_volume``) for the maps;
        a column the table lacks is an :class:`InputError` listing the known ones."""
        missing = [c for c in columns if c not in self.table.columns]
        if missing:
            known = [c for c in self.table.columns if c not in ("cohort", "session", "label")]
            raise InputError(f"no {what} column {missing[0]!r}; known: {', '.join(known)}")
        out = np.empty((self.n, len(columns)))
        for j, c in enumerate(columns):
            out[:, j] = pd.to_numeric(self.table[c], errors="coerce").to_numpy(np.float64)
        return out, list(columns)

    def labels(self, rows: list[int] | np.ndarray) -> list[str]:
        """Readable names of some maps (participant/session/label), for error messages."""
        out = []
        for i in rows:
            r = self.table.iloc[int(i)]
            ses = f"_ses-{r['session']}" if r["session"] else ""
            out.append(f"{r['cohort']}/sub-{r['participant']}{ses}_label-{r['label']}")
        return out


def _select(lake: Lake, source: str, statistic: str, atlas: str | None, query: GroupQuery) -> pd.DataFrame:
    """Catalog rows of one query (before the participants.tsv filters)."""
    from lakepipe.registry import get_method

    method = get_method(source)
    q = query.catalog
    rows = lake.catalog.query(
        kind="derivative",
        method=source,
        statistic=method.statistic(statistic).name,
        atlas=atlas,
        cohort=list(q["cohort"]) if "cohort" in q else None,
        label=list(q["label"]) if "label" in q else None,
        session=list(q["session"]) if "session" in q else None,
        participant=[p.removeprefix("sub-") for p in q["participants"]] if "participants" in q else None,
    )
    rows = method.select(rows, atlas)
    return rows[rows["cohort"].notna()]  # lesion maps only (sphere seeds belong to no participant)


def _participants(lake: Lake, cohorts: list[str]) -> pd.DataFrame:
    """participants.tsv of the cohorts, one table (participant without ``sub-``)."""
    frames = []
    for c in cohorts:
        t = lake.participants(c).copy()
        if "participant_id" in t:
            t["participant"] = t["participant_id"].astype(str).str.removeprefix("sub-")
            t = t.drop(columns=["participant_id"])
        else:
            t = pd.DataFrame({"participant": []})
        t["cohort"] = c
        frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"participant": [], "cohort": []})


def _newest(rows: pd.DataFrame) -> pd.DataFrame:
    """One output per lesion map: the newest, when a seed was mapped again on other inputs."""
    rows = rows.sort_values(["created", "id"], kind="stable")
    rows = rows.drop_duplicates(["cohort", "participant", "session", "label"], keep="last")
    return rows.sort_values(["cohort", "participant", "session", "label"], kind="stable")


def _lesion_volumes(lake: Lake, table: pd.DataFrame) -> np.ndarray:
    """Each map's lesion volume in mm^3 (sum of the mask's weights times the voxel volume)."""
    from lakepipe.methods.seeds import cohort_seeds

    volume: dict[tuple[str, str, str, str], float] = {}
    for cohort, sub in table.groupby("cohort"):
        for s in cohort_seeds(lake, str(cohort), sorted(set(sub["participant"])), with_masks=True):
            assert s.mask is not None
            size = float(s.mask.values.sum()) if s.mask.values is not None else float(s.mask.n_voxels)
            key = (str(cohort), s.participant or "", s.session or "", s.label)
            volume[key] = size * abs(float(np.linalg.det(s.mask.grid.affine[:3, :3])))
    keys = zip(table["cohort"], table["participant"], table["session"], table["label"], strict=True)
    return np.array([volume.get((str(c), str(p), str(s), str(lab)), np.nan) for c, p, s, lab in keys])


def select_maps(
    lake: Lake,
    *,
    source: str,
    statistic: str | None,
    atlas: str | None,
    connectome: str | None,
    cases: GroupQuery,
    controls: GroupQuery | None,
    volumes: bool = False,
) -> MapSet:
    """Resolve the cases' (and controls') maps into one consistent :class:`MapSet`.

    Refuses maps from several connectomes, parameter sets or spaces (naming them), cases and
    controls that share a map, and queries that match nothing. ``volumes`` adds ``lesion_volume``.
    """
    if source == "afnm" and not atlas:
        raise InputError("AFNM scores are per atlas: give --atlas")
    stat = statistic or DEFAULT_STATISTIC[source]
    parts = []
    for what, query in (("cases", cases), ("controls", controls)):
        if query is None:
            continue
        rows = _select(lake, source, stat, atlas, query)
        if rows.empty:
            raise NotFoundError(
                f"--{what} {query.text!r}: no {source} {stat} maps"
                + (f" with atlas {atlas}" if atlas else "")
                + " match (see `lakepipe catalog ls`)"
            )
        if connectome:
            rows = rows[rows["connectome"] == connectome]
            if rows.empty:
                raise NotFoundError(f"--{what} {query.text!r}: no maps on connectome '{connectome}'")
        rows = _newest(rows).reset_index(drop=True)
        table = _participants(lake, sorted(set(rows["cohort"])))
        table = rows[["cohort", "participant", "session", "label"]].merge(
            table, on=["cohort", "participant"], how="left", validate="many_to_one"
        )
        keep = np.ones(len(rows), bool)
        for col, values in query.columns.items():
            if col not in table.columns:
                known = [c for c in table.columns if c not in ("cohort", "participant", "session", "label")]
                raise InputError(
                    f"--{what}: no participants.tsv column {col!r} in cohort(s) "
                    f"{', '.join(sorted(set(rows['cohort'])))}; known: {', '.join(known) or 'none'}"
                )
            keep &= table[col].astype(str).isin(values).to_numpy()
        if not keep.any():
            raise NotFoundError(f"--{what} {query.text!r}: no map's participant matches {query.columns}")
        parts.append((what, rows[keep].reset_index(drop=True), table[keep].reset_index(drop=True)))
    rows = pd.concat([p[1] for p in parts], ignore_index=True)
    table = pd.concat([p[2] for p in parts], ignore_index=True)
    is_case = np.concatenate([np.full(len(p[1]), p[0] == "cases") for p in parts])
    _check_one_set(rows, is_case, source, stat)
    table["session"] = table["session"].fillna("")
    table["label"] = table["label"].fillna("")
    if volumes:
        table[LESION_VOLUME] = _lesion_volumes(lake, table)
    return MapSet(source, stat, atlas, str(rows["connectome"].iloc[0]), rows, is_case, table)


def _check_one_set(rows: pd.DataFrame, is_case: np.ndarray, source: str, stat: str) -> None:
    dup = rows.duplicated(["cohort", "participant", "session", "label"], keep=False)
    if dup[is_case].any() and dup[~is_case].any():
        both = rows[dup & is_case]
        names = [f"{c}/sub-{p}" for c, p in zip(both["cohort"], both["participant"], strict=True)]
        raise InputError(f"cases and controls share maps ({', '.join(names[:5])}): make the queries disjoint")
    connectomes = sorted(set(rows["connectome"].dropna()))
    if len(connectomes) > 1:
        raise InputError(
            f"the maps come from {len(connectomes)} connectomes ({', '.join(connectomes)}): a test compares "
            "maps of one connectome; choose one with --connectome"
        )
    if rows["params_hash"].nunique() > 1:
        raise InputError(
            f"the {source} {stat} maps were made with {rows['params_hash'].nunique()} parameter sets "
            "(e.g. binary and fractional lesion weighting): narrow the queries to one"
        )


def summary(maps: MapSet) -> dict[str, Any]:
    """The inputs of a result, for its metadata: every map's catalog id and who it is."""
    return {
        "source": maps.source,
        "statistic": maps.statistic,
        "atlas": maps.atlas,
        "connectome": maps.connectome,
        "n_cases": int(maps.is_case.sum()),
        "n_controls": int((~maps.is_case).sum()),
        "output_ids": [int(i) for i in maps.rows["id"]],
    }
