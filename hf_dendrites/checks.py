"""Value checks shared by the settings dataclasses: each raises `ValueError` naming the field."""

from __future__ import annotations

import math
from typing import Any


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")


def check_int(owner: str, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def check_float(owner: str, name: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{owner}.{name} must be a finite number {bound}, got {value!r}")


def check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be a bool, got {value!r}")


def check_fraction(owner: str, name: str, value: Any, *, closed_low: bool, closed_high: bool) -> None:
    """A number in an interval between 0 and 1, each end open or closed."""
    check_float(owner, name, value, positive=not closed_low)
    if not (value <= 1 if closed_high else value < 1):
        low, high = "[" if closed_low else "(", "]" if closed_high else ")"
        raise ValueError(f"{owner}.{name} must be in {low}0, 1{high}, got {value!r}")
