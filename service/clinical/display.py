"""How numbers are shown to clinicians: short, and never on the wrong side of a threshold."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal


def fmt_number(value: float) -> str:
    """Short display of a number: 8.2, 10, -2.5, 9.999.

    Truncated toward zero at 3 decimals, so a value never *displays* on the other side of a
    threshold written with 3 decimals or fewer (9.9996 shows as 9.999, not 10; -2.4996 as
    -2.499, not -2.5).
    """
    if not abs(value) < 1e12:
        return f"{value:.6g}"  # data errors only (plausibility bounds stop them before rules)
    shown = repr(float(value))
    if "e" in shown:  # below 1e-4: repr switches to exponent notation
        exact = Decimal(shown).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
        shown = format(exact.normalize(), "f")
    else:
        # Cutting the shortest decimal repr after 3 decimals is truncation toward zero,
        # without Decimal's cost (this runs for every value a card may show).
        whole, _, decimals = shown.partition(".")
        decimals = decimals[:3].rstrip("0")
        shown = f"{whole}.{decimals}" if decimals else whole
    return "0" if shown in ("-0", "0") else shown
