"""Job specs (``jobs/*.yaml``, validated by ``schemas/job.schema.json``): reading, checking,
environment substitution.

Conventions: ``${VAR}`` / ``${VAR:-default}`` in string values are replaced from the environment
(names that look like secrets are refused: credentials reach lakepipe through the environment, never
through a spec). Relative paths resolve against the working folder, or against the spec's own
``base`` (itself relative to the spec's folder) or ``--base`` when given, so an example spec run
from a work folder writes into that folder, never next to the spec. ``lake``/``catalog``/``scheduler``
default to the command-line options, then the spec, then the usual environment variables.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lakepipe.errors import EnvironmentFailure, InputError

#: folder of the JSON Schemas when lakepipe is installed without its source tree (container images)
SCHEMA_DIR_ENV = "LAKEPIPE_SCHEMA_DIR"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|ACCESS_KEY|SESSION_KEY|API_KEY", re.IGNORECASE
)


# ------------------------------------------------------------------------------------------ schema


def schema_dir() -> Path:
    """``$LAKEPIPE_SCHEMA_DIR``, else the source tree's ``schemas/``, else the installed copy
    (``<prefix>/share/lakepipe/schemas``, from the wheel's data files)."""
    env = os.environ.get(SCHEMA_DIR_ENV)
    if env:
        return Path(env)
    source = Path(__file__).resolve().parents[2] / "schemas"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "lakepipe" / "schemas"


def examples_dir() -> Path:
    """The bundled example job specs: the source tree's ``jobs/``, else the installed copy
    (``<prefix>/share/lakepipe/jobs``)."""
    source = Path(__file__).resolve().parents[2] / "jobs"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "lakepipe" / "jobs"


def example_specs() -> dict[str, Path]:
    """Name -> path of every bundled example spec."""
    return {p.stem: p for p in sorted(examples_dir().glob("*.yaml"))}


def example_spec(name: str) -> Path:
    """The bundled example spec ``name`` (``tutorial``, ``nightly-lesions``...)."""
    specs = example_specs()
    if name not in specs:
        raise InputError(f"no example job named {name!r}; known: {', '.join(specs) or 'none installed'}")
    return specs[name]


@lru_cache(maxsize=4)
def load_schema(name: str = "job") -> dict:
    """A lakepipe JSON Schema (``job``, ``sidecar``) as a dict."""
    path = schema_dir() / f"{name}.schema.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EnvironmentFailure(
            f"JSON Schema not found (incomplete installation?); set {SCHEMA_DIR_ENV} to the folder holding "
            f"{path.name}",
            path,
        ) from None


def field_path(parts: Iterable[Any]) -> str:
    """``['steps', 1, 'kind']`` -> ``steps[1].kind`` (``spec`` for the document itself)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "spec"


def _error_text(err) -> str:
    if err.validator == "not" and err.validator_value.get("required") == ["participants", "only_new"]:
        return "participants and only_new: true exclude each other"
    if err.validator == "pattern" and "A-Za-z0-9" in str(err.validator_value):
        return f"{err.instance!r} is not a BIDS-safe name (letters and digits only)"
    return err.message


def schema_errors(data: Any, schema: str = "job") -> list[str]:
    """Every violation of ``schema`` by ``data`` as ``field.path: problem`` (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(schema))
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    seen, out = set(), []
    for err in errors:
        text = f"{field_path(err.absolute_path)}: {_error_text(err)}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def validate_spec(data: Any, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` naming the failing field(s) when ``data`` is not a valid job spec."""
    errors = schema_errors(data)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InputError("invalid job spec: " + "; ".join(errors[:3]) + more, source)


# ----------------------------------------------------------------------------------------- loading


@dataclass
class JobSpec:
    """A loaded job: environment substituted and validated; relative paths resolve against ``base``."""

    name: str
    steps: list[dict[str, Any]]
    base: Path
    path: Path | None = None
    lake: str | None = None
    catalog: str | None = None
    scheduler: str | None = None
    description: str = ""
    variables: list[str] = field(default_factory=list)  #: environment variables the spec uses

    def resolve(self, value: str) -> str:
        """A local path of the spec made absolute against :attr:`base` (URLs are left alone)."""
        if "://" in value:
            return value.rstrip("/")
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (self.base / p).resolve())


def read_spec(path: str | os.PathLike) -> dict:
    """Parse a YAML/JSON spec file (no validation)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("job spec not found", path) from None
    except OSError as exc:
        raise InputError(f"cannot read job spec: {exc.strerror}", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"not valid YAML{where}: {problem}", path) from None
    if not isinstance(data, dict):
        raise InputError("a job spec must be a mapping with version, name and steps", path)
    return data


def substitute(
    data: Any, env: dict[str, str] | None = None, *, source=None, strict: bool = True, _path: tuple = ()
) -> tuple[Any, set[str], set[str]]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``data``.

    Returns the new data, the variables used and the variables missing (left as written when
    ``strict`` is false; an :class:`InputError` naming the field otherwise).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    used: set[str] = set()
    missing: set[str] = set()
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            out[k], u, m = substitute(v, env, source=source, strict=strict, _path=(*_path, k))
            used |= u
            missing |= m
        return out, used, missing
    if isinstance(data, list):
        items = []
        for i, v in enumerate(data):
            new, u, m = substitute(v, env, source=source, strict=strict, _path=(*_path, i))
            items.append(new)
            used |= u
            missing |= m
        return items, used, missing
    if not isinstance(data, str) or "${" not in data:
        return data, used, missing

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if _SECRET_NAME.search(name):
            raise InputError(
                f"{field_path(_path)}: ${{{name}}} looks like a secret; credentials must come "
                "from the environment directly, not through a job spec",
                source,
            )
        used.add(name)
        value = environ.get(name)
        if value is None or value == "":
            if default is not None:
                return default
            if strict:
                raise InputError(f"{field_path(_path)}: environment variable {name} is not set", source)
            missing.add(name)
            return m.group(0)
        return value

    return _VAR.sub(repl, data), used, missing


def load_job(
    path: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    base: str | os.PathLike[str] | None = None,
) -> JobSpec:
    """Read, validate and substitute the job spec at ``path``.

    ``base`` (default: the spec's ``base`` field, relative to the spec's folder, else the working
    folder) is what relative paths of the spec resolve against.

    Raises :class:`InputError` (file and field named) for unreadable, invalid or incomplete specs.
    """
    path = Path(path).resolve()
    raw = read_spec(path)
    validate_spec(raw, path)
    data, used, _ = substitute(raw, env, source=path)
    validate_spec(data, path)  # values that came from the environment must be valid too
    if base is not None:
        root = Path(base).expanduser().resolve()
    elif data.get("base"):
        root = (path.parent / Path(data["base"]).expanduser()).resolve()
    else:
        root = Path.cwd()
    job = JobSpec(
        name=data["name"],
        steps=list(data["steps"]),
        base=root,
        path=path,
        catalog=data.get("catalog"),
        scheduler=data.get("scheduler"),
        description=data.get("description", ""),
        variables=sorted(used),
    )
    lake = data.get("lake")
    job.lake = job.resolve(lake) if lake else None
    return job


def check_spec_file(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> list[str]:
    """Validate a spec file for ``lakepipe jobs validate``: notes (variables it needs) or InputError.

    Unlike :func:`load_job`, unset environment variables are not an error here: they are listed,
    since a spec is usually checked where it is written, not where it runs.
    """
    path = Path(path)
    raw = read_spec(path)
    validate_spec(raw, path)
    data, used, missing = substitute(raw, env, source=path, strict=False)
    if not missing:
        validate_spec(data, path)
    return [f"needs ${name} at run time" for name in sorted(missing)]
