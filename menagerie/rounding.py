"""How the leaderboard rounds numbers: half away from zero on the decimal a reader sees, in every output.

Python's `round` and f-string formatting round the binary float half to even, so 7.75 became 7.8 but 1.25 became
1.2 (both are exact in binary), and 2.675 became 2.67 (its binary value is just below). Rounding the float's
shortest repr with Decimal ROUND_HALF_UP gives what a reader computes by hand: 7.8, 1.3, 2.68.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

SCORE_DIGITS = 1  # leaderboard scores, standard errors, deltas and z scores, in md, html and json alike
PAPER_DIGITS = 2  # the published numbers on the leaderboard


def round_half_up(value: float | int | None, digits: int = 1) -> float | None:
    """`value` rounded to `digits` decimals, half away from zero, as a float (None stays None)."""
    if value is None:
        return None
    # + 0.0 turns a rounded -0.0 into 0.0
    return float(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)) + 0.0


def fmt(value: float | int | None, digits: int = 1, signed: bool = False, missing: str = "—") -> str:
    """`value` as text with exactly `digits` decimals (rounded as `round_half_up`), `missing` for None."""
    if value is None:
        return missing
    text = f"{Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP):f}"
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]  # -0.0 reads as 0.0
    return "+" + text if signed and not text.startswith("-") else text
