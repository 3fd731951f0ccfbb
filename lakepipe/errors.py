"""Exceptions with a user-facing meaning, and their exit statuses.

- :class:`InputError` (exit 2): anything the user can fix: a bad file, option or value. Pure compute
  code raises ``ValueError``/``TypeError``; the layers that call it translate those into
  ``InputError`` at their boundary, naming the file or option.
- :class:`EnvironmentFailure` (exit 1): the environment, not the input: the catalog database is
  unreachable, object storage does not answer, schema files are missing.

The command line prints either as one line (``--debug`` shows the traceback). Anything else is a
bug: one line too, exit status 1, and the traceback with ``--debug``.
"""

from __future__ import annotations

from os import PathLike


class LakepipeError(Exception):
    """Base class of lakepipe's own errors.

    Parameters
    ----------
    problem
        What is wrong, phrased for the user.
    source
        The file, URL or option the problem is about; printed first.
    """

    exit_code = 1

    def __init__(self, problem: str, source: str | PathLike[str] | None = None):
        self.problem = problem
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class InputError(LakepipeError, ValueError):
    """Bad user input: a file, an option or a value that lakepipe refuses (exit status 2)."""

    exit_code = 2


class NotFoundError(InputError):
    """A named thing (cohort, atlas, connectome, derivative, lake) is not in the lake."""


class EnvironmentFailure(LakepipeError):
    """The environment failed (catalog or storage unreachable, installation incomplete): exit 1."""

    exit_code = 1
