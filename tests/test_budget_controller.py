"""acmtool.runtime.BudgetController (issue 17): the budget knob driven by measured latency, checked
rule by rule and in a simulated queue (no clock: service times are a function of the budget), and
the load benchmark's pieces (arrivals, serving, the accuracy curve)."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from acmtool.errors import AcmInputError
from acmtool.runtime import BudgetController
from benchmarks.load import accuracy_curve, arrivals, pooled, ramp, render, serve, summarise


def test_the_budget_falls_fast_when_over_target_and_rises_slowly_with_slack():
    ctl = BudgetController(10.0, 0.25, 1.0, start=0.75, every=4, decrease=0.4, increase=0.05, slack=0.5,
                           headroom=0.8)
    for _ in range(3):
        ctl.observe(50.0)
    assert ctl.budget == 0.75  # no decision before `every` requests
    ctl.observe(50.0)
    assert ctl.budget == pytest.approx(0.75 - 0.4 * 0.5)
    for _ in range(4):
        ctl.observe(7.0)  # under headroom x target, not under slack x target: hold
    assert ctl.budget == pytest.approx(0.55)
    fast = 0
    while ctl.budget == pytest.approx(0.55) and fast < 100:  # the slow ones leave the sliding window first
        ctl.observe(1.0)
        fast += 1
    assert ctl.budget == pytest.approx(0.60) and 4 <= fast <= 4 * 4 + 4
    for _ in range(400):
        ctl.observe(1.0)
    assert ctl.budget == 1.0
    for _ in range(400):
        ctl.observe(99.0)
    assert ctl.budget == 0.25
    assert ctl.changes > 10


def test_bad_controller_settings_are_clear_errors():
    for args, message in (((0, 0.25, 1.0), "positive number"), ((float("nan"), 0.25, 1.0), "positive number"),
                          ((10, 0.5, 0.25), "lowest < highest"), ((10, 0.0, 1.0), "lowest < highest")):
        with pytest.raises(AcmInputError, match=message):
            BudgetController(*args)
    with pytest.raises(AcmInputError, match="decrease"):
        BudgetController(10, 0.25, 1.0, decrease=1.5)


def _simulate(budget_of, observe, times, service):
    """One server, requests in arrival order; each learns its latency before the next starts."""
    free, lat = 0.0, []
    for t in times:
        start = max(t, free)
        free = start + service(budget_of()) / 1e3
        lat.append((free - t) * 1e3)
        observe(lat[-1])
    return np.array(lat)


def test_in_a_simulated_queue_the_controller_holds_the_target_where_a_fixed_budget_does_not():
    def service(b):  # ms: 6 at budget 0.5, 3.5 at 0.25
        return 1.0 + 10.0 * b
    times = arrivals(60.0, 180.0, 60.0, seed=0)  # capacity 167/s at 0.5 and 286/s at 0.25
    fixed = _simulate(lambda: 0.5, lambda _: None, times, service)
    ctl = BudgetController(30.0, 0.25, 1.0, start=0.5)
    controlled = _simulate(lambda: ctl.budget, ctl.observe, times, service)
    last = times > 40.0  # the last third: above the fixed budget's capacity
    assert np.percentile(fixed[last], 99) > 300
    assert np.percentile(controlled[last], 99) < 30.0
    first = times < 20.0  # light load and a looser target: it spends more than the fixed budget
    budgets = []
    loose = BudgetController(60.0, 0.25, 1.0, start=0.5)
    got = _simulate(lambda: budgets.append(loose.budget) or loose.budget, loose.observe, times[first], service)
    assert np.mean(budgets) > 0.55 and np.percentile(got, 99) < 60.0


def _model_with(tmp_path, meta: dict):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g)
    helper.set_model_props(m, meta)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    return path


def test_a_controller_for_a_model_takes_its_budget_range_from_the_model(tmp_path):
    single = {"acmtool.budget": json.dumps({"trained": 0.5, "range": [0.05, 1.0], "trained_range": None})}
    ctl = BudgetController.for_model(_model_with(tmp_path, single), target_ms=20)
    assert (ctl.budget, ctl.lowest, ctl.highest) == (0.5, 0.25, 1.0)  # no lower than the knob goes unwarned
    ranged = {"acmtool.budget": json.dumps({"trained": 0.625, "range": [0.1, 1.0], "trained_range": [0.25, 1.0]})}
    assert BudgetController.for_model(_model_with(tmp_path, ranged), target_ms=20).lowest == 0.25
    assert BudgetController.for_model(_model_with(tmp_path, ranged), target_ms=20, lowest=0.1).lowest == 0.1
    with pytest.raises(AcmInputError, match="outside the model's calibrated range"):
        BudgetController.for_model(_model_with(tmp_path, ranged), target_ms=20, lowest=0.05)
    with pytest.raises(AcmInputError, match="no budget input"):
        BudgetController.for_model(_model_with(tmp_path, {}), target_ms=20)


def test_arrivals_rise_at_the_asked_rate():
    times = arrivals(50.0, 150.0, 30.0, seed=1)
    assert np.all(np.diff(times) >= 0) and times[-1] < 30.0
    assert abs(len(times) - 3000) < 3 * np.sqrt(3000)  # the mean rate 100/s over 30 s
    first, last = np.sum(times < 10), np.sum(times >= 20)
    assert 1.9 < last / first < 2.5  # 1250 vs 583 expected: 2.14
    assert np.array_equal(times, arrivals(50.0, 150.0, 30.0, seed=1))


def test_arrivals_can_hold_the_peak_rate():
    times = arrivals(50.0, 150.0, 30.0, seed=2, hold=1 / 3)  # rise over 20 s, then 150/s for 10 s
    assert np.all(np.diff(times) >= 0) and times[-1] < 30.0
    held = np.sum(times >= 20.0)
    assert abs(held - 1500) < 4 * np.sqrt(1500)
    rising = np.sum(times < 20.0)  # the mean rate 100/s over the rise
    assert abs(rising - 2000) < 4 * np.sqrt(2000)
    assert abs(np.sum(times < 2.0) - 110) < 4 * np.sqrt(110)  # 50 -> 60/s over the first 2 s: 50 * 2 + 5 * 2^2 / 2
    with pytest.raises(ValueError, match="hold"):
        arrivals(50.0, 150.0, 30.0, seed=2, hold=1.0)


class _Recorder:
    def __init__(self):
        self.budgets = []

    def run(self, _outputs, feed):
        self.budgets.append(float(feed["budget"]) if "budget" in feed else None)


def test_serving_feeds_each_request_its_budget_and_times_it_from_arrival():
    sess = _Recorder()
    times = np.linspace(0, 0.2, 40)
    seen = []
    got = serve(sess, [{"x": np.zeros(1)}], times, workers=2, budget_of=lambda: 0.375, observe=seen.append)
    assert sess.budgets == [0.375] * 40 and len(seen) == 40
    assert np.all(got["latency_ms"] >= 0) and np.all(got["budget"] == 0.375)
    curve = ([0.25, 0.5], [40.0, 50.0], 51.0, "drop-in probe")
    row = summarise("acm controlled", got, times, 0.2, 10.0, curve, 0.5)
    assert row["mean_budget"] == 0.375 and row["accuracy"] == pytest.approx(45.0)
    assert row["requests"] == 40 and 0 <= row["over_target"] <= 1


def test_the_accuracy_curve_comes_from_an_eval_report(tmp_path):
    report = {"teacher_probe_accuracy": 0.5,
              "budget_curve": [{"budget": 0.75, "vs_original": {"dropin_probe": {"diff": -0.01, "se": 0.01}}},
                               {"budget": 0.25, "vs_original": {"dropin_probe": {"diff": -0.05, "se": 0.01}}}]}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(report))
    xs, acc, original, metric = accuracy_curve(path)
    assert xs == [0.25, 0.75] and acc == pytest.approx([45.0, 49.0]) and original == 50.0
    assert metric == "drop-in probe" and accuracy_curve(None) is None


def test_the_load_ramp_stops_short_of_what_the_lowest_budget_can_serve():
    assert ramp(200.0, 400.0, 1.1, 0.85) == (100.0, pytest.approx(220.0))  # a wide range: the fixed model overloads
    assert ramp(198.0, 235.0, 1.1, 0.85) == (99.0, pytest.approx(199.75))  # MiniLM at batch 1: capped
    assert ramp(202.0, 250.0, 1.1, 0.6) == (101.0, pytest.approx(150.0))  # the default headroom


def test_repeated_load_runs_are_reported_as_medians_with_each_runs_p99():
    def row(p99, budget):
        return {"model": "acm controlled", "requests": 10, "p50_ms": p99 / 4, "p99_ms": p99, "over_target": p99 / 1000,
                "p99_low_ms": p99 - 2, "p99_mid_ms": p99 - 1, "p99_high_ms": p99, "mean_budget": budget,
                "lowest_budget": 0.25}
    got = pooled([row(90.0, 0.3), row(30.0, 0.5), row(60.0, 0.4)])
    assert got["p99_ms"] == 60.0 and got["p99_high_ms"] == 60.0 and got["mean_budget"] == pytest.approx(0.4)
    assert got["p99_ms_each"] == [90.0, 30.0, 60.0] and got["p99_low_ms_each"] == [88.0, 28.0, 58.0]
    assert got["requests"] == 10 and got["repeats"] == 3
    text = render([got], 50.0)
    assert "p99 each run" in text and "90 / 30 / 60" in text
    assert "each run" not in render([pooled([row(90.0, 0.3)])], 50.0)  # one run: the table as before
