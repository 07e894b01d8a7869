"""Values for strict JSON (the operator page, `learner/stats`, the classifier's status)."""

from __future__ import annotations

import math


def finite_or_none(value):
    """NaN and ±Inf (a loss before the first update, a metric with nothing to average) become None,
    at every depth of nested dicts, lists and tuples (tuples come back as lists, as JSON has them)."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
