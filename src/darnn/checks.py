"""The checks every schema runs on its values, and the short reprs their messages echo.

Each ``check_*`` raises a ValueError whose message names the key and the accepted values,
e.g. ``epochs=0 is not valid; it must be an integer >= 1``; `short_repr` keeps any echoed
value short (a YAML alias bomb never renders in full).
"""

from __future__ import annotations

import math
import numbers

# Longest repr an error message echoes (a YAML alias bomb can expand to megabytes).
SHOWN_CHARS = 200


def short_repr(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters.

    Long values end in "... (N chars)", so a message never echoes megabytes. A huge nested
    container (a YAML alias bomb) is never rendered in full: its repr is built piece by
    piece and abandoned once past the limit, and its length counted up to 10^6.
    """
    text = _bounded_repr(value, limit + 1, set())
    if len(text) <= limit:
        return text
    total = _repr_length(value, _COUNT_CAP, set())
    size = f"{total} chars" if total <= _COUNT_CAP else f"over {_COUNT_CAP} chars"
    return f"{text[:limit]}... ({size})"


_COUNT_CAP = 10**6
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _bounded_repr(value: object, limit: int, active: set[int]) -> str:
    """repr(value), or a prefix of it at least ``limit`` long, without building all of it."""
    if not isinstance(value, _CONTAINERS) or len(value) == 0:
        return repr(value)
    if id(value) in active:  # a self-referencing structure, as repr writes it
        return "[...]" if isinstance(value, list) else "{...}"
    active.add(id(value))
    if isinstance(value, dict):
        items = (
            f"{_bounded_repr(k, limit, active)}: {_bounded_repr(v, limit, active)}"
            for k, v in value.items()
        )
        open_, close = "{", "}"
    else:
        items = (_bounded_repr(v, limit, active) for v in value)
        open_, close = {list: ("[", "]"), tuple: ("(", ")")}.get(type(value), ("{", "}"))
    parts, length = [], 1
    for item in items:
        parts.append(item)
        length += len(item) + 2
        if length > limit:
            break
    else:
        open_ += ", ".join(parts) + ("," if isinstance(value, tuple) and len(value) == 1 else "")
        parts = []
    active.discard(id(value))
    return open_ + ", ".join(parts) if parts else open_ + close


def _repr_length(value: object, cap: int, active: set[int]) -> int:
    """len(repr(value)) without building it; stops counting once past ``cap``."""
    if not isinstance(value, _CONTAINERS) or len(value) == 0:
        return len(repr(value))
    if id(value) in active:
        return 5
    active.add(id(value))
    total = 2 + 2 * (len(value) - 1) + int(isinstance(value, tuple) and len(value) == 1)
    members = value.items() if isinstance(value, dict) else ((v,) for v in value)
    for member in members:
        total += sum(_repr_length(v, cap, active) for v in member)
        total += 2 * (len(member) - 1)  # ": " between a key and its value
        if total > cap:
            break
    active.discard(id(value))
    return total


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming the accepted values unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name}={short_repr(value)} is not valid; accepted values: {', '.join(choices)}"
        )


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (numpy scalars included, bool excluded)."""
    # numbers.Real covers numpy floats and integers; bool is excluded by the callers' rules.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``)."""
    ok = is_real(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"{name}={short_repr(value)} is not valid; it must be a finite number {bound}"
        )


def check_density(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` lies in (0, 1]."""
    if not (is_real(value) and 0 < value <= 1):
        raise ValueError(f"{name}={short_repr(value)} is not valid; a density must lie in (0, 1]")


def check_finite(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number."""
    if not (is_real(value) and math.isfinite(value)):
        raise ValueError(f"{name}={short_repr(value)} is not valid; it must be a finite number")


def check_count(name: str, value: int, *, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{name}={short_repr(value)} is not valid; it must be an integer >= {minimum}"
        )
