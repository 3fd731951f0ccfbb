"""Exceptions with a user-facing meaning.

``InputError`` is raised for anything the user can fix (bad file, bad option, unsafe label); the
command line prints it as one line and exits with status 2. Everything else is a bug or an
environment failure and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class LakepipeError(Exception):
    """Base class of lakepipe's own errors."""

    exit_code = 1


class InputError(LakepipeError, ValueError):
    """Bad user input: a file, an option or a value that lakepipe refuses.

    Parameters
    ----------
    problem
        What is wrong, phrased for the user.
    source
        The file, URL or option the problem is about; printed first.
    """

    exit_code = 2

    def __init__(self, problem: str, source: str | PathLike | None = None):
        self.problem = problem
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class NotFoundError(InputError):
    """A named thing (cohort, atlas, connectome, derivative) is not in the lake."""
