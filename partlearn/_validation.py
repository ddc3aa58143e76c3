"""Errors a user can cause, and the small checks that raise them.

A ``PartlearnError`` is a user's mistake or a problem with the user's data: the
CLI prints its message on one line and exits with ``exit_code``, no traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib


class PartlearnError(Exception):
    """A user-facing error: the message says what was wrong and what was expected."""

    exit_code = 1


class ConfigError(PartlearnError, ValueError):
    """A bad configuration file, key, value or command-line usage (exit code 2)."""

    exit_code = 2


class DataError(PartlearnError, ValueError):
    """A dataset that cannot be read as asked: missing files, bad images, bad annotations."""

    exit_code = 1


class CacheError(PartlearnError):
    """The stage store cannot be written: a read-only folder or a full disk (exit code 1)."""

    exit_code = 1


def did_you_mean(word: str, candidates) -> str:
    """`` (did you mean 'x'?)`` when a close candidate exists, else ``''``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(name: str, value, choices) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ConfigError(
            f"{name}={value!r} is not one of {options}{did_you_mean(str(value), map(str, choices))}"
        )
