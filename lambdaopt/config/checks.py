"""Range rules for config fields, kept in each dataclass field's metadata (`check=...`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Check:
    """A range rule: `test(value)` is True when allowed; `allowed` says what is allowed."""

    test: Callable[[Any], bool]
    allowed: str


def positive() -> dict:
    return {"check": Check(lambda v: v is not None and v > 0, "a number > 0")}


def non_negative() -> dict:
    return {"check": Check(lambda v: v is not None and v >= 0, "a number >= 0")}


def seed_range() -> dict:
    return {"check": Check(lambda v: v is not None and 0 <= v < 2**32, "an integer in [0, 2^32 - 1]")}


def open_unit() -> dict:
    return {"check": Check(lambda v: v is not None and 0 < v < 1, "a number in (0, 1)")}


def share() -> dict:
    return {"check": Check(lambda v: v is not None and 0 < v <= 1, "a number in (0, 1]")}


def one_of(*choices: str) -> dict:
    return {"check": Check(lambda v: v in choices, "one of " + ", ".join(choices))}


def positive_list() -> dict:
    return {
        "check": Check(
            lambda v: v is not None and len(v) > 0 and all(int(k) > 0 for k in v),
            "a non-empty list of integers > 0",
        )
    }


def field_with(default: Any, rule: dict) -> Any:
    """A dataclass field with a default and a range rule."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=rule)
    return field(default=default, metadata=rule)


def optional_positive() -> dict:
    return {"check": Check(lambda v: v is None or v > 0, "a number > 0, or null")}


def optional_positive_list() -> dict:
    return {"check": Check(lambda v: v is None or all(int(k) > 0 for k in v), "null or a list of integers > 0")}


def non_empty() -> dict:
    return {"check": Check(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")}


TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def tracking_uri() -> dict:
    """An MLflow tracking URI: a scheme MLflow stores runs with (sqlite:///path.db, http://host:port, ...)."""
    def test(v) -> bool:
        if not isinstance(v, str) or not v.strip():
            return False
        scheme = v.split(":", 1)[0].split("+", 1)[0] if ":" in v else ""
        return scheme in TRACKING_SCHEMES and (scheme != "sqlite" or v.startswith("sqlite:///"))

    return {"check": Check(test, "an MLflow tracking URI: sqlite:///FILE.db, http(s)://HOST:PORT, file:///DIR, "
                                 "postgresql://..., mysql://...")}


def resume_value() -> Check:
    """`resume`: null (a new run), `last`, or a 32-hex-digit MLflow run id."""
    import re

    return Check(lambda v: v is None or v == "last" or (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v) is not None),
                 "null (a new run), last, or an MLflow run id (32 hex digits)")


def betas() -> dict:
    """Adam's (β1, β2): two numbers in [0, 1)."""
    return {"check": Check(lambda v: v is not None and len(v) == 2 and all(0 <= float(b) < 1 for b in v),
                           "two numbers in [0, 1), e.g. [0.9, 0.999]")}
