"""--mode select (fastscale_jax.timing.select) with an injected timer: a budget sweep writes
its table, rows and plot, saves each target as it is found and resumes a stopped sweep with
only the rest; one model's selection is recorded and reused by training (the same model on
every machine)."""

import csv
import functools
import json
import math
import os
import types

import pytest

import fastscale_jax as fs
from fastscale_jax import configs
from fastscale_jax.errors import ConfigError, WorkdirError
from fastscale_jax.timing import budget as tb
from fastscale_jax.timing import select


class Timer:
    """time = 1e-9 * flops ** 0.8 per step; remembers what it timed; can fail on call N."""

    def __init__(self, fail_at=None):
        self.names, self.fail_at = [], fail_at

    def __call__(self, spec):
        if self.fail_at is not None and len(self.names) + 1 == self.fail_at:
            raise KeyboardInterrupt  # as Ctrl-C (or a crash) in the middle of the sweep
        self.names.append(spec.name)
        t = 1e-9 * fs.complexity(spec)["flops"] ** 0.8
        return types.SimpleNamespace(time_s=t, spread_pct=1.0, compile_s=0.1, error=None)


@pytest.fixture
def timed(monkeypatch):
    def install(timer):
        monkeypatch.setattr(select, "scale_to_time",
                            functools.partial(tb.scale_to_time, measure=timer))
        return timer
    return install


def _sweep_config(times=("2ms", "4ms")):
    c = configs.load("budget_sweep:demo")
    c.family.kinds, c.family.alphas = ("dWr", "dwr"), ()
    c.family.times = times
    return c


def _base_ms(c):
    from fastscale_jax import sweep

    return 1e3 * 1e-9 * fs.complexity(sweep.base_spec(c))["flops"] ** 0.8


def _budgets(c, *mult):
    return tuple(f"{_base_ms(c) * m:.4g}ms" for m in mult)


def test_sweep_writes_table_rows_and_plot(tmp_path, timed):
    timer = timed(Timer())
    c = _sweep_config()
    c.family.times = _budgets(c, 0.1, 2, 4)  # 0.1x: below the smallest reachable model
    out = select.select_sweep(c, str(tmp_path), log=lambda *a: None)
    rows = out["rows"]
    assert [(r["strategy"], r["budget"]) for r in rows] == [
        (k, t) for k in ("dWr", "dwr") for t in c.family.times]
    assert [r["status"] for r in rows if r["budget"] == c.family.times[0]] == ["unreachable"] * 2
    assert all("below the smallest" in r["note"] for r in rows if r["status"] == "unreachable")
    tol = c.scaling.time_tolerance  # the demo's: 0.10
    for r in rows[1:3] + rows[4:]:
        assert r["time_ms"] <= r["budget_ms"] * (1 + tol) and r["flops"] > 0
    for name in ("select.csv", "select.json", "flops_vs_budget.png", select.SWEEP_ROWS_FILE):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "select.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert len(timer.names) == len(set(timer.names))  # a strategy never times a model twice


def test_a_stopped_sweep_resumes_with_only_the_rest(tmp_path, timed):
    c = _sweep_config()
    c.family.times = _budgets(c, 2, 4)
    first = timed(Timer(fail_at=6))
    with pytest.raises(KeyboardInterrupt):
        select.select_sweep(c, str(tmp_path), log=lambda *a: None)
    lines = (tmp_path / select.SWEEP_ROWS_FILE).read_text().splitlines()
    saved = [json.loads(x)["row"]["strategy"] + "|" + json.loads(x)["row"]["budget"]
             for x in lines[1:]]
    assert 1 <= len(saved) < 4  # what was found before the stop is on disk
    with open(tmp_path / select.SWEEP_ROWS_FILE, "a") as f:
        f.write('{"row": {"strategy": "dw')  # and a write cut short by the stop
    logged = []
    second = timed(Timer())
    out = select.select_sweep(c, str(tmp_path), log=logged.append)
    assert len(out["rows"]) == 4 and all(r["status"] in ("within", "under") for r in out["rows"])
    assert any("dropped 1 unreadable line" in str(x) for x in logged)
    assert any(f"{len(saved)} target(s) already found" in str(x) for x in logged)
    redone = {r["strategy"] + "|" + r["budget"] for r in out["rows"]} - set(saved)
    assert len(redone) == 4 - len(saved) and second.names  # only the rest was searched
    assert len(second.names) < len(first.names) + len(second.names)
    # the saved targets' measurements seed the rest: the resumed sweep re-times none of them
    # and chooses what an uninterrupted sweep chooses
    kept = {m["name"] for x in lines[1:] for m in json.loads(x)["result"]["measurements"]}
    assert kept and not kept & set(second.names)
    timed(Timer())
    whole = select.select_sweep(c, str(tmp_path / "whole"), log=lambda *a: None)
    assert [(r["model"], r["status"]) for r in out["rows"]] == [
        (r["model"], r["status"]) for r in whole["rows"]]


def test_a_sweep_refuses_a_workdir_holding_another_sweep(tmp_path, timed):
    timed(Timer())
    c = _sweep_config()
    c.family.times = _budgets(c, 2)
    select.select_sweep(c, str(tmp_path), log=lambda *a: None)
    c.timing.batch_size = 16
    with pytest.raises(WorkdirError, match="another --workdir"):
        select.select_sweep(c, str(tmp_path), log=lambda *a: None)
    c.timing.batch_size = 32
    c.scaling.time_tolerance = 0.05  # another hit criterion: another sweep
    with pytest.raises(WorkdirError, match="another --workdir"):
        select.select_sweep(c, str(tmp_path), log=lambda *a: None)


def test_sweep_tolerance_is_the_configs_and_checked(tmp_path, timed):
    c = _sweep_config()
    c.family.times = _budgets(c, 2, 4, 8)
    found = {}
    for tol in (0.02, 0.10):
        timer = timed(Timer())
        c.scaling.time_tolerance = tol
        rows = select.select_sweep(c, str(tmp_path / str(tol)), log=lambda *a: None)["rows"]
        assert all(r["status"] == "under" or abs(r["ratio"] - 1) <= tol for r in rows)
        found[tol] = len(timer.names)
    assert found[0.10] < found[0.02]  # a looser hit stops sooner
    for bad in (0, 1.5, -0.1):
        c.scaling.time_tolerance = bad
        with pytest.raises(ConfigError, match="time_tolerance.*in \\(0, 1\\)"):
            select.select_sweep(c, str(tmp_path / "bad"), log=lambda *a: None)


def _model_config(budget):
    c = configs.load("regnetz_dWr")
    c.scaling.flops = None
    c.scaling.kind = "dWr"
    c.model.resolution = c.model.test_resolution = 64
    c.timing.batch_size = 32
    c.scaling.time = budget
    return c


def test_one_model_is_recorded_and_training_reuses_it(tmp_path, timed):
    timer = timed(Timer())
    base = select.base_spec(_model_config("1ms"))
    c = _model_config(f"{1e3 * 1e-9 * fs.complexity(base)['flops'] ** 0.8 * 3:.4g}ms")
    res = select.select_model(c, str(tmp_path), log=lambda *a: None)
    rec = json.loads((tmp_path / select.SELECT_FILE).read_text())
    assert rec["result"]["spec"]["name"] == res.spec.name and rec["result"]["measurements"]
    assert res.time_s <= res.budget_s * 1.05 and res.flops > 2 * fs.complexity(base)["flops"]
    n = len(timer.names)
    spec = select.recorded_spec(c, str(tmp_path), log=lambda *a: None)
    assert spec == res.spec and len(timer.names) == n  # read back, nothing re-measured
    other = _model_config("7ms")
    with pytest.raises(ConfigError, match="another request"):
        select.recorded_spec(other, str(tmp_path), log=lambda *a: None)
    with pytest.raises(ConfigError, match="never resolved"):
        select.recorded_spec(c, str(tmp_path / "empty"), resolve=False)


def test_select_without_a_budget_is_one_clear_line(tmp_path):
    c = configs.load("regnetz_dWr")
    with pytest.raises(ConfigError, match="needs a time budget: --config.scaling.time"):
        select.run_select(c, str(tmp_path))


def test_training_is_told_when_its_allocator_differs_from_the_selections(tmp_path, timed,
                                                                          monkeypatch):
    from fastscale_jax.cpu import hostmem

    timed(Timer())
    c = _model_config("3ms")
    select.select_model(c, str(tmp_path), log=lambda *a: None)
    logged = []
    select.recorded_spec(c, str(tmp_path), log=logged.append)
    assert not any("will not take the measured time" in x for x in logged)
    monkeypatch.setattr(hostmem, "status", lambda: "host malloc tuning: on (elsewhere)")
    select.recorded_spec(c, str(tmp_path), log=logged.append)
    assert any("will not take the measured time" in x for x in logged)


def test_budget_plot_labels_of_one_budget_do_not_overlap(tmp_path, monkeypatch):
    # three strategies reaching nearly the same flops at one budget: their time/budget labels
    # are pushed apart to at least the gap, in the final (laid-out) axes
    import matplotlib.pyplot as plt

    from fastscale_jax.timing import plots

    rows = [{"strategy": s, "budget": "60ms", "budget_ms": 60.0, "flops": f, "ratio": 1.0,
             "status": "within"} for s, f in (("a", 20.0e6), ("b", 20.4e6), ("c", 20.8e6))]
    rows += [{"strategy": s, "budget": "120ms", "budget_ms": 120.0, "flops": 2 * f,
              "ratio": 1.0, "status": "within"} for s, f in (("a", 20e6), ("b", 30e6))]
    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    plots.flops_vs_budget(rows, str(tmp_path / "p.png"))
    ax = seen["fig"].axes[0]
    to_pt = 72.0 / seen["fig"].dpi
    ys = sorted(ax.transData.transform(t.xy)[1] * to_pt + t.xyann[1]
                for t in ax.texts if t.xy[0] == 60.0)
    assert len(ys) == 3 and min(b - a for a, b in zip(ys, ys[1:])) >= 7.0 - 1e-6, ys
    assert os.path.getsize(tmp_path / "p.png") > 0
