"""Resource quantities as Kubernetes writes them ("100m", "128Mi", "1.5",
"2e3"), parsed exactly (Decimal), for QoS classes and, later, the
scheduler's fit checks."""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """The value of a quantity; ValueError for one Kubernetes would refuse."""
    if isinstance(value, str):
        return _parse_remembered(value) if len(value) <= 64 else _parse_text(value)
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}")


def _parse_text(value: str) -> Decimal:
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"invalid quantity {value!r}") from None
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    return base * (Decimal(10) ** int(suffix[1:]))


# Every pod create parses its containers' requests and limits several times
# (defaults, validation, admission), and a cluster uses few distinct ones.
# Decimals are immutable, so a parsed value can be handed out again.
_parse_remembered = functools.lru_cache(maxsize=4096)(_parse_text)


def format_quantity(value: Decimal, binary: bool = False) -> str:
    """A quantity as Kubernetes writes a computed one: whole numbers plain
    (binary suffixes for byte counts that divide evenly: "256Mi"), fractions
    in milli- or nano-units ("1500m")."""
    if value == value.to_integral_value():
        whole = int(value)
        if binary and whole:
            for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
                if whole % _BINARY[suffix] == 0:
                    return f"{whole // _BINARY[suffix]}{suffix}"
        return str(whole)
    milli = value * 1000
    if milli == milli.to_integral_value():
        return f"{int(milli)}m"
    return f"{int((value * 10**9).to_integral_value())}n"
