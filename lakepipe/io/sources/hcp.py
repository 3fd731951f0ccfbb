"""HCP parcellated releases in the Neuromatch Academy (NMA) layouts: parcel series per run, task EVs.

Two layouts are read (NMA's ``hcp`` 2020/2021 rest+task folder, and its 2021 ``hcp_task`` folder)::

    <root>/regions.npy | regions.tsv        (N, 3) name, network, myelin | index, name, network, hemisphere
    <root>/subjects_list.txt                one subject folder per line (optional: else subjects/*)
    <root>/subjects/<s>/timeseries/bold<k>_Atlas_MSMAll_Glasser360Cortical.npy   (N, T); run k as NMA numbers
    <root>/subjects/<s>/EVs/<run>/<condition>.txt                                onset duration amplitude
    <root>/subjects/<s>/<TASK>/tfMRI_<TASK>_<RL|LR>/data.npy  and  .../EVs/<condition>.txt   (hcp_task)

Every run is one row of the connectome (its id ``<subject><TASK><run>``, e.g. ``100307MOTORRL``; its
participant the subject, so methods average a participant's runs), chosen by ``task``: ``rest`` (the
default: the resting runs, for ``parcellate``), a task name (``MOTOR``: its runs and their events, for
``lakepipe task contrast``), or ``all``. Runs differ in length (rest 1200 frames, MOTOR 284): rows are
stored with their own number of time points. The rows' task, run and TR, and the task runs' events,
go into the connectome store as row tables (:mod:`lakepipe.io.stores.rowtables`): ``runs`` (subject,
participant, task, run, n_frames, t_r) and ``events`` (subject, condition, onset, duration,
amplitude; seconds from the run's first frame, as in the EV files).

Regions are numbered 1..N in the order of the series' rows (NMA's order: the 180 right-hemisphere
parcels first); hemisphere ``R``/``L`` from the table or the ``R_``/``L_`` name prefix. Event files are
checked against their run: an event that starts before 0 or ends more than one frame after the run's
last frame is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from lakepipe.errors import InputError
from lakepipe.io.sources.base import (
    ConnectomeSource,
    SubjectRef,
    file_fingerprint,
    register_source,
    safe_subject_id,
)

#: HCP's repetition time (s)
HCP_TR = 0.72
#: NMA's numbering of the HCP runs: bold<k> is BOLD_NAMES[k - 1]
BOLD_NAMES = (
    "rfMRI_REST1_LR",
    "rfMRI_REST1_RL",
    "rfMRI_REST2_LR",
    "rfMRI_REST2_RL",
    "tfMRI_MOTOR_RL",
    "tfMRI_MOTOR_LR",
    "tfMRI_WM_RL",
    "tfMRI_WM_LR",
    "tfMRI_EMOTION_RL",
    "tfMRI_EMOTION_LR",
    "tfMRI_GAMBLING_RL",
    "tfMRI_GAMBLING_LR",
    "tfMRI_LANGUAGE_RL",
    "tfMRI_LANGUAGE_LR",
    "tfMRI_RELATIONAL_RL",
    "tfMRI_RELATIONAL_LR",
    "tfMRI_SOCIAL_RL",
    "tfMRI_SOCIAL_LR",
)
_BOLD = re.compile(r"^bold(\d+)_Atlas_MSMAll_Glasser360Cortical\.npy$")
_RUN = re.compile(r"^(?P<kind>[rt])fMRI_(?P<task>[A-Za-z]+?)(?P<session>\d*)_(?P<dir>RL|LR)$")
REST = "REST"


@dataclass(frozen=True)
class HcpRun:
    """One run of one subject: its series file, its name, and its EV folder (task runs)."""

    subject: str
    name: str  #: HCP run name, e.g. tfMRI_MOTOR_RL
    series: Path
    evs: Path | None

    @property
    def task(self) -> str:
        m = _RUN.match(self.name)
        return m["task"].upper() if m else self.name.upper()

    @property
    def row_id(self) -> str:
        m = _RUN.match(self.name)
        tail = f"{m['task']}{m['session']}{m['dir']}" if m else self.name
        return safe_subject_id(f"{self.subject}{tail}")


def _region_table(root: Path, regions: str | Path | None) -> pd.DataFrame:
    """index (1..N in series order), name, network, hemisphere."""
    path = (
        Path(regions)
        if regions
        else (root / "regions.tsv" if (root / "regions.tsv").exists() else root / "regions.npy")
    )
    if not path.exists():
        raise InputError(
            "an HCP release needs a region table (regions.npy or regions.tsv, or --regions)", root
        )
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 2 or arr.shape[1] < 2:
                raise InputError(
                    f"regions.npy must be (N, >=2): name, network[, myelin]; got {arr.shape}", path
                )
            table = pd.DataFrame({"name": arr[:, 0].astype(str), "network": arr[:, 1].astype(str)})
        else:
            table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str)
            table.columns = [c.strip().lower() for c in table.columns]
            if "name" not in table.columns:
                raise InputError(f"the region table needs a name column; found {list(table.columns)}", path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read the region table ({exc})", path) from exc
    hemi = table["hemisphere"] if "hemisphere" in table.columns else pd.Series([None] * len(table))
    prefix = table["name"].str.extract(r"^([LR])_", expand=False)
    hemi = [
        {"right": "R", "left": "L", "r": "R", "l": "L"}.get(
            str(h).strip().lower(), p if isinstance(p, str) else None
        )
        for h, p in zip(hemi, prefix, strict=True)
    ]
    return pd.DataFrame(
        {
            "index": np.arange(1, len(table) + 1),
            "name": table["name"].astype(str),
            "network": table["network"] if "network" in table.columns else None,
            "hemisphere": hemi,
        }
    )


def _subject_runs(root: Path, subject: str) -> list[HcpRun]:
    base = root / "subjects" / subject
    if not base.is_dir():
        raise InputError(f"subject {subject!r} is listed but has no folder", base)
    runs = []
    ts_dir = base / "timeseries"
    if ts_dir.is_dir():
        for p in sorted(ts_dir.iterdir()):
            m = _BOLD.match(p.name)
            if not m:
                continue
            k = int(m[1])
            if not 1 <= k <= len(BOLD_NAMES):
                raise InputError(f"run number {k} outside NMA's numbering 1..{len(BOLD_NAMES)}", p)
            name = BOLD_NAMES[k - 1]
            evs = base / "EVs" / name
            runs.append(HcpRun(subject, name, p, evs if evs.is_dir() else None))
    for task_dir in sorted(d for d in base.iterdir() if d.is_dir() and d.name not in ("timeseries", "EVs")):
        for run_dir in sorted(d for d in task_dir.iterdir() if d.is_dir() and _RUN.match(d.name)):
            if (run_dir / "data.npy").exists():
                evs = run_dir / "EVs"
                runs.append(
                    HcpRun(subject, run_dir.name, run_dir / "data.npy", evs if evs.is_dir() else None)
                )
    return runs


def read_ev_file(path: Path, n_frames: int, t_r: float) -> np.ndarray:
    """An EV file as (k, 3) float64: onset, duration, amplitude (s), checked against the run."""
    try:
        text = path.read_text()
        rows = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        values = np.array([[float(v) for v in r] for r in rows], dtype=np.float64).reshape(
            -1, 3 if rows else 3
        )
    except (ValueError, OSError) as exc:
        raise InputError(
            f"an EV file holds 'onset duration amplitude' numbers per line ({exc})", path
        ) from exc
    end_of_run = n_frames * t_r
    for onset, duration, _ in values:
        if not (np.isfinite(onset) and np.isfinite(duration)) or onset < 0 or duration < 0:
            raise InputError(
                f"event at {onset:g} s with duration {duration:g} s: onsets and durations must be >= 0", path
            )
        if onset + duration > end_of_run + t_r:
            raise InputError(
                f"event at {onset:g} s (duration {duration:g} s) ends at {onset + duration:g} s, "
                "after the run "
                f"({n_frames} frames x {t_r:g} s = {end_of_run:g} s)",
                path,
            )
    return values


@register_source("hcp")
@dataclass
class HcpSource(ConnectomeSource):
    """An HCP parcellated release in NMA's layout (see the module notes)."""

    variable_time: ClassVar[bool] = True
    t_r: float = HCP_TR
    task: str = REST
    runs: dict[str, HcpRun] = field(default_factory=dict)  #: row id -> run
    n_frames: dict[str, int] = field(default_factory=dict)
    events: dict[str, pd.DataFrame] = field(default_factory=dict)  #: row id -> its events

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "subjects").is_dir() and any(
            (root / f).exists() for f in ("regions.npy", "regions.tsv")
        )

    @classmethod
    def open(
        cls,
        root: Path,
        regions: str | Path | None = None,
        task: str | None = None,
        t_r: float | None = None,
        participant_label: list[str] | None = None,
        **options: Any,
    ) -> HcpSource:
        if options:
            raise InputError(
                f"an HCP release takes no {'/'.join(options)} option (only --task, --t-r, --regions, "
                "--participant-label)",
                root,
            )
        table = _region_table(root, regions)
        tr = float(t_r) if t_r else HCP_TR
        if not tr > 0:
            raise InputError(f"--t-r must be positive, got {tr:g}", root)
        wanted = (task or REST).upper()
        listed = root / "subjects_list.txt"
        subjects = (
            [s.strip() for s in listed.read_text().splitlines() if s.strip()]
            if listed.exists()
            else sorted(d.name for d in (root / "subjects").iterdir() if d.is_dir())
        )
        if participant_label:
            keep = {str(p).removeprefix("sub-") for p in participant_label}
            missing = sorted(keep - set(subjects))
            if missing:
                raise InputError(f"participant(s) {missing} not in the release", root)
            subjects = [s for s in subjects if s in keep]
        src = cls(root=root, kind="parcel", regions=table, t_r=tr, task=wanted)
        found_tasks: set[str] = set()
        for s in subjects:
            for run in _subject_runs(root, s):
                found_tasks.add(run.task if not run.task.startswith(REST) else REST)
                is_rest = run.task.startswith(REST)
                if wanted != "ALL" and not ((wanted == REST and is_rest) or run.task == wanted):
                    continue
                src._add_run(run, len(table))
        if not src.subjects:
            raise InputError(
                f"no {wanted.lower() if wanted != 'ALL' else ''} runs found; the release has runs of: "
                + (", ".join(sorted(found_tasks)) or "none"),
                root,
            )
        return src

    def _add_run(self, run: HcpRun, n_regions: int) -> None:
        try:
            shape = np.load(run.series, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read parcel series ({exc})", run.series) from exc
        if len(shape) != 2 or shape[0] != n_regions:
            raise InputError(
                f"expected (parcels={n_regions}, time) as in the region table, got {shape}", run.series
            )
        n = int(shape[1])
        rid = run.row_id
        if rid in self.runs:
            raise InputError(f"run {run.name} of subject {run.subject} occurs twice", run.series)
        is_task = not run.task.startswith(REST)
        extra = ""
        if is_task:
            if run.evs is None:
                raise InputError(f"task run {run.name} has no EVs folder", run.series)
            rows = []
            for ev in sorted(run.evs.glob("*.txt")):
                for onset, duration, amplitude in read_ev_file(ev, n, self.t_r):
                    rows.append((rid, ev.stem, onset, duration, amplitude))
            if not rows:
                raise InputError(f"task run {run.name} has no events (no non-empty EV file)", run.evs)
            self.events[rid] = pd.DataFrame(
                rows, columns=["subject", "condition", "onset", "duration", "amplitude"]
            )
            extra = hashlib.sha256(self.events[rid].to_csv(index=False).encode()).hexdigest()
        self.n_time = max(self.n_time, n)
        self.runs[rid] = run
        self.n_frames[rid] = n
        self.subjects.append(
            SubjectRef(
                rid, run.series, None, file_fingerprint(run.series, extra), safe_subject_id(run.subject)
            )
        )

    def read(self, ref: SubjectRef) -> np.ndarray:
        try:
            arr = np.load(ref.path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read parcel series ({exc})", ref.path) from exc
        return np.asarray(arr, np.float32).T  # (time, parcel)

    def recorded_options(self) -> dict[str, Any]:
        return {"format": "hcp", "task": self.task.lower(), "t_r": self.t_r}

    def row_tables(self, refs: list[SubjectRef]) -> dict[str, pd.DataFrame]:
        """The ``runs`` and ``events`` tables of these rows (see the module notes)."""
        ids = [r.subject_id for r in refs]
        runs = pd.DataFrame(
            {
                "subject": ids,
                "participant": [r.group or r.subject_id for r in refs],
                "task": [self.runs[i].task if not self.runs[i].task.startswith(REST) else REST for i in ids],
                "run": [self.runs[i].name for i in ids],
                "n_frames": np.array([self.n_frames[i] for i in ids], np.int64),
                "t_r": np.full(len(ids), self.t_r),
            }
        )
        frames = [self.events[i] for i in ids if i in self.events]
        events = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame({"subject": [], "condition": [], "onset": [], "duration": [], "amplitude": []})
        )
        events = events.astype({"onset": np.float64, "duration": np.float64, "amplitude": np.float64})
        return {"runs": runs, "events": events}
