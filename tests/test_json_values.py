import json
import math

import numpy as np

from parl_robot.json_values import finite_or_none


def test_non_finite_floats_become_null_at_every_depth_and_the_rest_is_kept():
    value = {"loss": float("nan"), "q": np.float64("inf"), "steps": 3, "name": "x", "ok": True,
             "metrics": {"precision": -math.inf, "recall": 0.5, "history": [1.0, float("nan"), (2, float("inf"))]}}
    cleaned = finite_or_none(value)
    assert cleaned == {"loss": None, "q": None, "steps": 3, "name": "x", "ok": True,
                       "metrics": {"precision": None, "recall": 0.5, "history": [1.0, None, [2, None]]}}
    json.dumps(cleaned, allow_nan=False)  # strict JSON now
    assert value["loss"] != value["loss"]  # the input is not modified
