"""How every command writes counts, accuracies and times: "1 job" / "3 jobs", accuracies as percentages, durations."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 job', '0 jobs', '3 jobs'; `many` for an irregular plural ('1 analysis', '2 analyses')."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def percent(fraction: float, digits: int = 2) -> str:
    """An accuracy or a share in [0, 1] as a percentage: 0.8537 → '85.37 %'."""
    return f"{100 * fraction:.{digits}f} %"


def duration(seconds: float) -> str:
    """A duration for a reader: '1 h 02 min', '3 min 05 s', '42 s'."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return (f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s")


def clock(seconds: float) -> str:
    """A duration as a clock, for estimates and ETAs: '1:02:05'."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
