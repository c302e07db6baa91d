"""The workshop notebook's one helper: put a participant's prediction next to the lab's number.

>>> print(reveal(None, 500.0, "requests/s"))
the lab says 500 requests/s (write your prediction in `prediction` first)
>>> print(reveal(400, 500.0, "requests/s"))
you predicted 400, the lab says 500 requests/s: 20% low
"""

from __future__ import annotations

from chatcore.tables import fmt_auto

__all__ = ["reveal"]


def reveal(prediction: float | None, measured: float, unit: str = "") -> str:
    """One line: the measured number with its unit and, if there is a prediction, how far off it was."""
    says = f"the lab says {fmt_auto(measured).removesuffix('.0')}{' ' + unit if unit else ''}"
    if prediction is None:
        return f"{says} (write your prediction in `prediction` first)"
    if measured == 0:
        verdict = "exact" if prediction == 0 else "the answer is zero"
    else:
        off = (prediction - measured) / abs(measured)
        verdict = "within 10%: well done" if abs(off) <= 0.10 else f"{abs(off):.0%} {'high' if off > 0 else 'low'}"
    return f"you predicted {fmt_auto(prediction).removesuffix('.0')}, {says}: {verdict}"
