"""Errors a user can cause, and the small checks that raise them.

A ``PartlearnError`` is a user's mistake or a problem with the user's data: the
CLI prints its message on one line and exits with ``exit_code``, no traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re


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


# ------------------------------------------------------------- setting checks
# In the spirit of scikit-learn's ``_param_validation`` (``Interval``, ``StrOptions``):
# a check is called as ``check(name, value)`` and raises a ``ConfigError`` that names the
# setting, the value and what was expected; ``describe()`` is the short form for the docs.


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return str(list(value))
    return repr(value) if isinstance(value, str) else str(value)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _type_error(name: str, value, kind: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} should be of type {kind}, got {type(value).__name__}")


class Interval:
    """A number of type ``kind`` (``int`` or ``float``) between ``low`` and ``high``
    (``None``: unbounded), ``closed`` ``"both"``, ``"left"``, ``"right"`` or
    ``"neither"``; ``also``: values accepted besides (``-1``: automatic); ``expected``:
    the message's words after ``must`` (default ``be >= 1``, ``be in [0, 1]``...)."""

    def __init__(self, kind, low=None, high=None, closed="both", *, also=(), expected=""):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.also, self.expected = tuple(also), expected or f"be {self.describe(bare=True)}"

    def describe(self, bare: bool = False) -> str:
        lo = self.closed in ("both", "left")
        hi = self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            text = f"in {'[' if lo else '('}{self.low}, {self.high}{']' if hi else ')'}"
        elif self.low is not None:
            text = f"{'>=' if lo else '>'} {self.low}"
        elif self.high is not None:
            text = f"{'<=' if hi else '<'} {self.high}"
        else:
            text = "any"
        if not bare:
            text = f"{self.kind.__name__} {text}"
            if self.also:
                text += " or " + ", ".join(map(str, self.also))
        return text

    def ok(self, v) -> bool:
        if v in self.also:
            return True
        lo = self.closed in ("both", "left")
        hi = self.closed in ("both", "right")
        return ((self.low is None or (v >= self.low if lo else v > self.low))
                and (self.high is None or (v <= self.high if hi else v < self.high)))

    def typed(self, v) -> bool:
        return _is_int(v) if self.kind is int else _is_real(v)

    def __call__(self, name: str, value) -> None:
        if not self.typed(value):
            raise _type_error(name, value, self.kind.__name__)
        if not self.ok(value):
            raise ConfigError(f"{name}={_shown(value)} must {self.expected}")


class Options:
    """One of ``choices`` (a did-you-mean for a near miss)."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in self.choices)

    def __call__(self, name: str, value) -> None:
        check_choice(name, value, self.choices)


class Pattern:
    """A string matching ``regex`` in full; ``expected``: what it may be, in words."""

    def __init__(self, regex: str, expected: str):
        self.regex, self.expected = re.compile(regex), expected

    def describe(self) -> str:
        return self.expected

    def __call__(self, name: str, value) -> None:
        if not isinstance(value, str):
            raise _type_error(name, value, "str")
        if not self.regex.fullmatch(value):
            raise ConfigError(f"{name}={value!r} is not {self.expected}")


class Type:
    """Any value of type ``kind`` (``str``: free text, ``bool``: a switch)."""

    def __init__(self, kind):
        self.kind = kind

    def describe(self) -> str:
        return {str: "text", bool: "true, false"}.get(self.kind, self.kind.__name__)

    def __call__(self, name: str, value) -> None:
        if not isinstance(value, self.kind):
            raise _type_error(name, value, self.kind.__name__)


class Each:
    """A list whose elements all pass ``item``; ``nonempty``, ``distinct`` and ``sizes``
    (the lengths allowed) as asked; ``expected``: the message's words after ``must``."""

    def __init__(self, item, *, nonempty=False, distinct=False, sizes=None, expected=""):
        self.item, self.nonempty, self.distinct, self.sizes = item, nonempty, distinct, sizes
        self.expected = expected

    def describe(self) -> str:
        words = ["list"]
        if self.nonempty:
            words.insert(0, "non-empty")
        if self.distinct:
            words.insert(0, "distinct")
        if self.sizes:
            words.append("of " + " or ".join(map(str, self.sizes)))
        if self.expected:
            return self.expected.removeprefix("be ")
        return f"{' '.join(words)} of {self.item.describe().removeprefix('one of ')}"

    def __call__(self, name: str, value) -> None:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name}={value!r} should be a list")
        values = list(value)
        fail = ConfigError(f"{name}={values} must "
                           f"{self.expected or 'be a ' + self.describe()}")
        if (self.nonempty and not values) or (self.sizes and len(values) not in self.sizes):
            raise fail
        if isinstance(self.item, (Options, Rule)):  # each element named on its own
            for v in values:
                self.item(name, v)
        else:
            for i, v in enumerate(values):
                if isinstance(self.item, Interval):
                    if not self.item.typed(v):
                        raise _type_error(f"{name}[{i}]", v, self.item.kind.__name__)
                    if not self.item.ok(v):
                        raise fail
                else:
                    self.item(f"{name}[{i}]", v)
        twice = sorted({v for v in values if values.count(v) > 1})
        if self.distinct and twice:
            if self.expected:
                raise fail
            raise ConfigError(f"{name}={values} lists {twice} more than once")


class Rule:
    """A check written as a function ``fn(name, value)`` that raises ``ConfigError``;
    ``expected``: what it accepts, in words, for the docs."""

    def __init__(self, fn, expected: str):
        self.fn, self.expected = fn, expected

    def describe(self) -> str:
        return self.expected

    def __call__(self, name: str, value) -> None:
        self.fn(name, value)


def check_finite(name: str, value) -> None:
    """NaN and inf are never a setting (a number, or a list of them)."""
    for x in (value if isinstance(value, (tuple, list)) else (value,)):
        if isinstance(x, float) and not math.isfinite(x):
            raise ConfigError(f"{name}={_shown(value)} must be finite (no NaN or inf)")
