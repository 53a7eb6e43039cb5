"""How every command writes counts and accuracies: "1 job" / "3 jobs", and accuracies as percentages."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 job', '0 jobs', '3 jobs'; `many` for an irregular plural ('1 analysis', '2 analyses')."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def percent(fraction: float, digits: int = 2) -> str:
    """An accuracy or a share in [0, 1] as a percentage: 0.8537 → '85.37 %'."""
    return f"{100 * fraction:.{digits}f} %"
