"""A throwaway PostgreSQL server for the catalog tests, and the fixtures that use it.

If ``$LAKEPIPE_TEST_POSTGRES`` holds a SQLAlchemy URL, that server is used as it is. Otherwise the
server binaries (``initdb``, ``postgres``: on ``PATH``, in ``/usr/lib/postgresql/<ver>/bin`` where
Debian's ``postgresql`` package puts them, or ``/usr/local/bin``) are run: ``initdb`` into a
temporary folder, ``postgres`` on 127.0.0.1 with a free port and its socket in that folder,
password authentication over TCP, durability switched off for speed. As root (CI containers),
PostgreSQL refuses to run, so both run as the ``postgres`` system user (or ``nobody``), which owns
the folder. One server serves the whole test session; it is stopped and its folder removed at exit.

Without binaries the tests are skipped, except under ``$CI``, where they fail: CI must run them.

Fixtures (import them into a test module or ``conftest.py``):

``postgres_url``
    Session-scoped SQLAlchemy URL of the server's test database.
``catalog_backend``
    Session-scoped, parametrized over ``sqlite`` and ``postgresql``.
``catalog_url``
    A fresh, empty catalog database per test on that backend: a SQLite file in ``tmp_path``, or a
    new PostgreSQL schema (selected through ``search_path`` in the URL).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

log = logging.getLogger(__name__)

ENV_URL = "LAKEPIPE_TEST_POSTGRES"
_DB = "lakepipe_test"
_USER = "lakepipe"
_START_TIMEOUT_S = 60.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path | None:
    """Folder holding ``initdb`` and ``postgres``, newest Debian version first; ``None`` if absent."""
    candidates: list[Path] = []
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).resolve().parent)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()],
        reverse=True,
    )
    candidates += [Path(p) for p in versions]
    candidates += [Path("/usr/local/bin").resolve(), Path("/usr/local/pgsql/bin")]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
        initdb = folder / "initdb"
        if initdb.is_symlink() and (initdb.resolve().parent / "postgres").exists():
            return initdb.resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_user() -> pwd.struct_passwd | None:
    """Unprivileged account to run the server as when we are root; ``None`` when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """A private PostgreSQL cluster in a temporary folder.

    Parameters
    ----------
    bindir
        Folder of ``initdb`` and ``postgres``; found with :func:`find_bindir` by default.
    """

    def __init__(self, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries not found (install Debian's 'postgresql' package, or set "
                f"{ENV_URL} to a server URL)"
            )
        self.user = _service_user()
        self.password = secrets.token_urlsafe(12)
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    # running as the service user ------------------------------------------------------------------
    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=120,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            **self._as_user(),
        )

    # life cycle -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Initialise and start the cluster, create the test database; return its SQLAlchemy URL."""
        self.root = Path(tempfile.mkdtemp(prefix="lakepipe-pg-"))
        data, sockets = self.root / "data", self.root / "sock"
        sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            for path in (self.root, sockets, pwfile):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.root, 0o700)
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                _USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from None
        for attempt in range(3):
            self.port = _free_port()
            if self._launch(data, sockets):
                break
            log.warning("postgres did not start on port %d (attempt %d)", self.port, attempt + 1)
        else:
            log_text = (self.root / "postgres.log").read_text(errors="replace")
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start:\n{log_text[-3000:]}")
        self._create_database()
        return self.url

    def _launch(self, data: Path, sockets: Path) -> bool:
        logfile = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(sockets),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=60",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "log_min_messages=warning",
                "-c",
                "deadlock_timeout=200ms",
            ],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
            **self._as_user(),
        )
        logfile.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._ready():
                return True
            time.sleep(0.1)
        self._terminate()
        return False

    def _connect(self, dbname: str):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=_USER,
            password=self.password,
            dbname=dbname,
            connect_timeout=5,
            autocommit=True,
        )

    def _ready(self) -> bool:
        try:
            with self._connect("postgres"):
                return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def _create_database(self) -> None:
        from psycopg import sql

        with self._connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_DB)))

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database (holds the password: never print it)."""
        return f"postgresql+psycopg://{_USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{_DB}"

    def _terminate(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        self._terminate()
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SERVER: PostgresServer | None = None


def shared_url() -> str:
    """URL of ``$LAKEPIPE_TEST_POSTGRES`` or of one server started for this process (stopped at exit).

    Raises
    ------
    PostgresUnavailable
        When there is neither a URL nor binaries.
    """
    global _SERVER
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env
    if _SERVER is None:
        server = PostgresServer()
        server.start()
        atexit.register(server.stop)
        _SERVER = server
    return _SERVER.url


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a PostgreSQL test database (skips without a server, fails under ``$CI``)."""
    try:
        return shared_url()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def catalog_backend(request: pytest.FixtureRequest) -> str:
    """Database backend of the catalog under test."""
    if request.param == "postgresql":
        request.getfixturevalue("postgres_url")
    return request.param


_SCHEMAS = itertools.count()


def _schema_sql(base_url: str, statement: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(base_url)
    try:
        with engine.begin() as conn:
            if statement == "create":
                conn.execute(sa.schema.CreateSchema(name))
            else:
                conn.execute(sa.schema.DropSchema(name, cascade=True))
    finally:
        engine.dispose()


def fresh_postgres_schema(base_url: str, tag: str = "t") -> tuple[str, str]:
    """Create a new empty schema in the database of ``base_url``.

    Returns
    -------
    (url, name)
        A URL whose ``search_path`` is the new schema, and the schema name (for dropping it).
    """
    name = f"lp_{tag}_{os.getpid()}_{next(_SCHEMAS)}_{secrets.token_hex(3)}"
    _schema_sql(base_url, "create", name)
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{name}", name


@pytest.fixture
def catalog_url(catalog_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty catalog database on ``catalog_backend`` (dropped afterwards)."""
    if catalog_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    base = request.getfixturevalue("postgres_url")
    url, name = fresh_postgres_schema(base)
    yield url
    try:
        _schema_sql(base, "drop", name)
    except Exception as exc:  # noqa: BLE001 - cleanup only
        log.warning("could not drop test schema %s: %s", name, type(exc).__name__)
