"""Hold a latency target under load by moving an ACM model's budget knob.

A server asks the controller for the budget before each request (`budget`) and reports each
request's latency, queueing included, when it completes (`observe`). Every `every` requests it
decides on the p99 of the recent ones: above `headroom` x the target the budget falls by a fraction
of its distance to the lowest budget (fast: queues grow fast), under `slack` x the target it rises by
a fixed step (slowly, probing for room), in between it holds: the multiplicative-decrease,
additive-increase rule of TCP's congestion control, which needs no model of the model's speed at
each budget. The headroom is there because the signal lags: a queue built at the old budget
drains only after the cut, and under a rising load the p99 of the next requests is above that of
the last ones. In a simulated queue (tests/test_budget_controller.py) cutting at the target itself
let the p99 run 1.3-1.6x past it; at 0.6 x it stayed under.

    ctl = BudgetController.for_model("model.acm.onnx", target_ms=50)
    feeds["budget"] = np.array(ctl.budget, dtype=np.float32)
    started = time.perf_counter(); sess.run(None, feeds)
    ctl.observe((time.perf_counter() - arrived) * 1e3)
"""
from __future__ import annotations

import json
import math
import threading
from typing import Optional

import numpy as np

from acmtool.config import FAR_FROM_TRAINED
from acmtool.errors import AcmInputError


class BudgetController:
    def __init__(self, target_ms: float, lowest: float, highest: float, start: Optional[float] = None,
                 every: int = 16, decrease: float = 0.3, increase: float = 0.01, slack: float = 0.3,
                 headroom: float = 0.6):
        if not (isinstance(target_ms, (int, float)) and math.isfinite(target_ms) and target_ms > 0):
            raise AcmInputError(f"the latency target must be a positive number of milliseconds; got {target_ms!r}")
        if not 0 < lowest < highest <= 1:
            raise AcmInputError(f"the budget range must satisfy 0 < lowest < highest <= 1; got {lowest}, {highest}")
        if not (0 < decrease < 1 and 0 < increase and 0 < slack < headroom <= 1 and every >= 1):
            raise AcmInputError("need 0 < decrease < 1, increase > 0, 0 < slack < headroom <= 1 and every >= 1")
        self.target_ms, self.lowest, self.highest = float(target_ms), float(lowest), float(highest)
        self.every, self.decrease, self.increase = int(every), decrease, increase
        self.slack, self.headroom = slack, headroom
        self._budget = min(highest, max(lowest, start if start is not None else highest))
        self._seen: list[float] = []
        self._lock = threading.Lock()
        self.changes = 0

    @classmethod
    def for_model(cls, path, target_ms: float, lowest: Optional[float] = None, **kwargs) -> "BudgetController":
        """A controller over the budgets an exported model supports (its `acmtool.budget` metadata):
        from `lowest` (default: the bottom of the range it was trained for (convert --budget-range),
        else as far below its trained budget as the knob goes without a warning) to its highest; it
        starts at the trained budget."""
        import onnx
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if "acmtool.budget" not in meta:
            raise AcmInputError(f"{path} has no budget input: export an ACM checkpoint converted by this version "
                                f"(static and older models run at one budget)")
        knob = json.loads(meta["acmtool.budget"])
        calibrated = knob["range"]
        if lowest is not None:
            floor = lowest
        elif knob.get("trained_range"):
            floor = knob["trained_range"][0]
        else:
            floor = max(calibrated[0], knob["trained"] - FAR_FROM_TRAINED)
        if not calibrated[0] - 1e-9 <= floor < calibrated[1]:
            raise AcmInputError(f"lowest budget {floor:g} lies outside the model's calibrated range "
                                f"[{calibrated[0]:g}, {calibrated[1]:g}]")
        return cls(target_ms, floor, calibrated[1], start=knob["trained"], **kwargs)

    @property
    def budget(self) -> float:
        return self._budget

    def observe(self, latency_ms: float) -> None:
        with self._lock:
            self._seen.append(float(latency_ms))
            if len(self._seen) < self.every:
                return
            p99 = float(np.percentile(self._seen, 99))
            if p99 > self.headroom * self.target_ms:
                new = self._budget - self.decrease * (self._budget - self.lowest)
                new = self.lowest if new - self.lowest < 1e-3 else new
            elif p99 < self.slack * self.target_ms:
                new = min(self.highest, self._budget + self.increase)
            else:
                new = self._budget
            if new != self._budget:  # the latencies seen so far were at the old budget: start afresh
                self._budget, self._seen = new, []
                self.changes += 1
            else:
                self._seen = self._seen[-4 * self.every:]  # a sliding window while nothing changes
