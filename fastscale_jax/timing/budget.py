"""Scale a model to a time budget on this machine: the paper's message (runtime, not flops, is
what a model costs) as a tool.

    res = scale_to_time(spec, "40ms", "dWr", batch_size=128)      # measured train steps
    res.spec, res.factor, res.time_s, res.flops, res.measurements
    res = scale_to_time(spec, "1000img/s", alpha=0.8, batch_size=64, mode="inference")
    pred = predict_to_time(spec, "40ms", "dWr", batch_size=128, fit="runs/sweep/fit.json")

The budget is a time per step of the global batch ('40ms', '2.5s', '250us', or a bare number
of seconds), a time per image ('2ms/img'), or a throughput ('1000img/s'); `parse_budget`.

Search (no peer library has one, hence written here): the scaler's models of one strategy are
discrete (rounded depths, widths, resolution), so the candidates are the distinct valid specs
over a log grid of factors, ordered by flops. The search measures the trainer's own compiled
step for a candidate (`timing.time_model`, the code path `--mode benchmark` times, with
`settle`: windows that spread over timing.max_spread_pct get timing.remeasure more rounds),
fits log(time) against log(flops) through the three measurements nearest the budget (a power law),
predicts the flops that meet the budget and measures the nearest candidate not yet measured
inside the current bracket (the largest model under the budget and the smallest over it).
It stops when a measurement lands within `tolerance` of the budget, when the bracket's two
models are neighbours (no candidate between them), or after `max_measurements`; it never
measures a spec twice. It returns the largest measured model at or under the budget (or, if
one is within tolerance above it, that one), the neighbour above it, every measurement, and
says why it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Callable

from fastscale_jax.complexity import complexity
from fastscale_jax.errors import ConfigError
from fastscale_jax.scaling import candidates, scaling_exponents, structure_key

MODES = ("train_step", "fwd_bwd", "inference")
# the factor grid candidates come from: x2^-8 .. x2^8 of the base, 16 steps per octave
GRID = tuple(2 ** (k / 16) for k in range(-128, 129))
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


@dataclasses.dataclass(frozen=True)
class Budget:
    """A parsed budget: seconds per step of `batch_size` images, and how it was given."""

    step_s: float
    text: str
    batch_size: int

    @property
    def image_s(self) -> float:
        return self.step_s / self.batch_size


def parse_budget(budget, *, batch_size: int) -> Budget:
    """A time budget from '40ms' / '2.5s' / '250us' / a bare number (seconds per step of the
    global batch), '2ms/img' (per image) or '1000img/s' (images per second)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer (the global "
                          "batch one step processes)")
    hint = ("use a time per step such as '40ms', '2.5s', '250us' or a number of seconds, a "
            "time per image such as '2ms/img', or a throughput such as '1000img/s'")
    if isinstance(budget, bool):
        raise ConfigError(f"time budget {budget!r} is not a time; {hint}")
    if isinstance(budget, (int, float)):
        step, text = float(budget), f"{budget:g}s"
    elif isinstance(budget, str):
        s = budget.strip().lower().replace(" ", "")
        m = re.fullmatch(r"([0-9.e+-]+|nan|inf|infinity)(img/s|images/s|im/s|s|ms|us|µs)?"
                         r"(/img|/image|/im)?", s)
        if not m:
            raise ConfigError(f"cannot parse time budget {budget!r}: {hint}")
        try:
            v = float(m.group(1))
        except ValueError:
            raise ConfigError(f"cannot parse time budget {budget!r}: {hint}") from None
        unit, per_image = m.group(2) or "s", m.group(3) is not None
        if unit.endswith("/s"):
            if per_image:
                raise ConfigError(f"cannot parse time budget {budget!r}: {hint}")
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"time budget {budget!r}: the throughput must be positive and "
                                  "finite (images per second)")
            step = batch_size / v
        else:
            step = v * _UNITS[unit] * (batch_size if per_image else 1)
        text = budget.strip()
    else:
        raise ConfigError(f"time budget must be a string or a number, got "
                          f"{type(budget).__name__}; {hint}")
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(f"time budget {budget!r} must be positive and finite; {hint}")
    if step >= 3600:
        raise ConfigError(f"time budget {budget!r} is {step / 3600:.3g} hours per step: did you "
                          "mean ms?")
    return Budget(step, text, batch_size)


@dataclasses.dataclass
class Measurement:
    """One measured candidate: its scaler factor, flops / acts per image, the median time per
    step (s) over the timing windows and their spread (%)."""

    factor: float
    name: str
    flops: int
    acts: int
    time_s: float
    spread_pct: float
    compile_s: float | None = None
    error: str | None = None
    settled: int = 0               # rounds of windows added to a too-wide spread (time_model)

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.time_s) and self.time_s > 0


@dataclasses.dataclass
class TimeResult:
    """What scale_to_time found (times: seconds per step of the global batch)."""

    spec: object
    factor: float
    time_s: float                  # measured median (predicted, with predicted=True)
    spread_pct: float | None
    flops: int
    params: int
    acts: int
    budget_s: float
    budget: str
    mode: str
    batch_size: int
    status: str                    # 'within' | 'under' (largest under, neighbour above) |
                                   # 'bracket' (stopped early) | 'predicted'
    note: str
    measurements: list = dataclasses.field(default_factory=list)
    above: Measurement | None = None   # the neighbour over the budget, when measured
    predicted: bool = False
    env: dict = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """time_s / budget_s."""
        return self.time_s / self.budget_s

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict()
        d["ratio"] = self.ratio
        return d


class BudgetUnreachableError(ConfigError):
    """No candidate can meet the budget (below the smallest reachable model, above what
    memory allows); `.result` holds the measurements taken."""

    def __init__(self, msg: str, result: TimeResult | None = None):
        super().__init__(msg)
        self.result = result


def budget_candidates(spec, kind=None, *, alpha=None) -> list[tuple[float, object, int, int]]:
    """[(factor, spec, flops, acts)] of the distinct valid models the strategy reaches over
    GRID, in increasing flops (ties: increasing factor)."""
    try:
        hash((spec, kind, alpha))
    except TypeError:  # an unhashable spec (a field holding a list): enumerate uncached
        return list(_budget_candidates.__wrapped__(spec, kind, alpha))
    return list(_budget_candidates(spec, kind, alpha))


@functools.lru_cache(maxsize=64)
def _budget_candidates(spec, kind, alpha) -> tuple:
    # cached: a sweep searches each strategy once per budget (~0.3 CPU-s per enumeration)
    out = [(f, c, *(complexity(c)[k] for k in ("flops", "acts")))
           for f, c in candidates(spec, GRID, kind, alpha=alpha)]
    return tuple(sorted(out, key=lambda t: (t[2], t[0])))


def _measurer(config, mode, batch_size, overrides) -> Callable:
    from fastscale_jax.timing.measure import time_model

    def measure(spec):
        # settle: a burst of load over most of one model's windows would misplace it in the
        # search (seen: 240 ms for a model that times 97 ms, taken as a 240 ms hit)
        return time_model(spec, config, modes=(mode,), batch_size=batch_size, settle=True,
                          **overrides)[mode]
    return measure


def _record(measure, cand) -> Measurement:
    f, spec, flops, acts = cand
    r = measure(spec)
    err = getattr(r, "error", None)
    return Measurement(f, spec.name, int(flops), int(acts), float(r.time_s),
                       float(getattr(r, "spread_pct", math.nan)),
                       getattr(r, "compile_s", None), err, int(getattr(r, "settled", 0) or 0))


MAX_STEP = 4.0  # the largest flops ratio between a measured model and the next one tried
FIT_POINTS = 3  # measurements the power law is fitted through: the nearest to the budget


def _next_index(cands, done: dict, budget: float, lo: int | None, hi: int | None) -> int | None:
    """The candidate to measure next: the power law time ~ flops^p fitted (least squares, in
    log-log) through the FIT_POINTS measurements nearest the budget, solved for the budget and
    snapped to the nearest unmeasured candidate strictly inside the bracket (lo, hi) (indices
    into cands; None = open)."""
    inside = [i for i in range(len(cands)) if i not in done
              and (lo is None or i > lo) and (hi is None or i < hi)]
    if not inside:
        return None
    pts = sorted(((abs(math.log(m.time_s / budget)), i) for i, m in done.items()
                  if m.ok))[:FIT_POINTS]
    if not pts:  # nothing timed yet ran (e.g. the base was out of memory): go smaller
        return min(inside)
    x = [math.log(cands[i][2]) for _, i in pts]
    y = [math.log(done[i].time_s) for _, i in pts]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((v - mx) ** 2 for v in x)
    if sxx > 0:  # the fitted line, through the points' centroid
        p = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sxx
    else:  # one point: time ~ flops (the first guess; the fit takes over)
        p, mx, my = 1.0, x[0], y[0]
    # Noise must not send the search off the grid: a nearly flat fit (p -> 0) would
    # extrapolate to a model many times larger (seen on a loaded CPU: x14 the flops for a 2x
    # time step). Slopes are clamped to [0.5, 2] and one step moves at most MAX_STEP in flops
    # from the measurement nearest the budget. Fitting three points rather than the nearest
    # two steadies the slope where neighbouring candidates time out of order (replaying the
    # demo sweep's measurements: 61 models timed instead of 70, as many within tolerance).
    p = min(max(p, 0.5), 2.0)
    goal = mx + (math.log(budget) - my) / p
    goal = min(max(goal, x[0] - math.log(MAX_STEP)), x[0] + math.log(MAX_STEP))
    return min(inside, key=lambda i: abs(math.log(cands[i][2]) - goal))


def scale_to_time(spec, budget, kind: str | None = None, *, alpha: float | None = None,
                  batch_size: int, mode: str = "train_step", config=None,
                  tolerance: float = 0.05, max_measurements: int = 8,
                  measure: Callable | None = None, on_measure: Callable | None = None,
                  cache: dict | None = None, **timing_overrides) -> TimeResult:
    """The largest model of one strategy (kind or alpha) whose measured `mode` step at the
    global `batch_size` fits `budget` on this machine (see the module docstring).

    config: the recipe whose compiled step is timed (as time_model takes; default the base
    config); timing_overrides: time_model settings (iters, windows, warmup, resolution, ...).
    measure(spec) -> a TimingResult-like object (time_s, spread_pct, error): injected in
    tests; on_measure(Measurement, n) is called after each measurement (progress display).
    cache: {structure_key(spec): Measurement} shared by several searches (a budget sweep):
    every spec of this strategy already in it seeds this search (bracket and fit) and is not
    timed again; `measurements` then lists those reused ones too. max_measurements counts
    only new measurements.
    Raises ConfigError for a bad budget, strategy or setting before anything is measured, and
    BudgetUnreachableError when even the smallest candidate is over the budget or none fits.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown timing mode {mode!r}; valid: {', '.join(MODES)}")
    b = parse_budget(budget, batch_size=batch_size)
    scaling_exponents(kind, alpha=alpha)
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance={tolerance!r} must be in (0, 1) (relative distance)")
    if isinstance(max_measurements, bool) or not isinstance(max_measurements, int) \
            or max_measurements < 2:
        raise ConfigError(f"max_measurements={max_measurements!r} must be an integer >= 2")
    cands = budget_candidates(spec, kind, alpha=alpha)
    if not cands:
        raise ConfigError(f"scaling {spec.name} with {kind or f'alpha={alpha}'} gives no valid "
                          "model at any factor")
    if measure is None:
        from fastscale_jax.timing.programs import timing_settings

        timing_settings(config, modes=(mode,), batch_size=batch_size, **timing_overrides)
        measure = _measurer(config, mode, batch_size, timing_overrides)
    cache = {} if cache is None else cache
    keys = [structure_key(c[1]) for c in cands]
    # what earlier searches of a sweep measured (another budget, another strategy through the
    # same spec) is known here too: it seeds the bracket and the fit and is never re-timed
    done: dict[int, Measurement] = {i: cache[k] for i, k in enumerate(keys) if k in cache}
    start = next((i for i, k in enumerate(keys) if k == structure_key(spec)),
                 min(range(len(cands)), key=lambda i: abs(math.log(cands[i][0]))))
    fresh, why = 0, ""
    while True:
        if any(m.ok and abs(m.time_s / b.step_s - 1) <= tolerance for m in done.values()):
            why = f"measured within {100 * tolerance:g}% of the budget"
            break
        lo, hi = _bracket(done, b.step_s)
        if fresh >= max_measurements:
            why = (f"stopped after {max_measurements} measurements (max_measurements) without "
                   f"one within {100 * tolerance:g}%: the bracket is returned")
            break
        i = start if start not in done else _next_index(cands, done, b.step_s, lo, hi)
        if i is None:
            why = ("no candidate lies between the largest model under the budget and the "
                   "smallest over it (the scaler's rounding): the one under it is returned")
            break
        m = done[i] = cache[keys[i]] = _record(measure, cands[i])
        fresh += 1
        if on_measure is not None:
            on_measure(m, fresh)
    return _result(spec, cands, done, b, mode, tolerance, why)


def _bracket(done: dict, budget: float) -> tuple[int | None, int | None]:
    """(index of the largest measured candidate at or under the budget, of the smallest
    over it or failed: an out-of-memory candidate counts as over)."""
    under = [i for i, m in done.items() if m.ok and m.time_s <= budget]
    over = [i for i, m in done.items() if not m.ok or m.time_s > budget]
    lo = max(under) if under else None
    hi = min(over) if over else None
    if lo is not None and hi is not None and hi < lo:  # noise: a bigger model measured faster
        lo = max(i for i in under if i < hi) if any(i < hi for i in under) else None
    return lo, hi


def _result(spec, cands, done, b: Budget, mode, tolerance, why) -> TimeResult:
    order = sorted(done)
    ms = [done[i] for i in order]
    ok = [i for i in order if done[i].ok]
    within = [i for i in ok if abs(done[i].time_s / b.step_s - 1) <= tolerance]
    under = [i for i in ok if done[i].time_s <= b.step_s]
    noisy = any(done[j].time_s < done[i].time_s * (1 - tolerance)
                for i in ok for j in ok if j > i)
    note = why + ("; measured times are not monotone in flops beyond the tolerance (timing "
                  "noise larger than it: re-measure on a quieter machine or raise tolerance)"
                  if noisy else "")
    if within:
        pick, status = max(within), "within"
    elif under:
        pick, status = max(under), "under" if "no candidate lies" in why else "bracket"
    else:
        raise _unreachable(spec, cands, done, b, ok)
    m = done[pick]
    above_i = [i for i in order if i > pick and (not done[i].ok or done[i].time_s > b.step_s)]
    above = done[min(above_i)] if above_i else None
    cx = complexity(cands[pick][1])
    if status != "within" and above is None and pick == len(cands) - 1:
        note += "; this is the largest model on the factor grid (x256 of the base)"
    if status != "within" and above is not None and not above.ok:
        note += (f"; the next model ({above.name}) failed to run ({above.error}): memory may cap "
                 "what fits")
    return TimeResult(spec=cands[pick][1], factor=m.factor, time_s=m.time_s,
                      spread_pct=m.spread_pct, flops=cx["flops"], params=cx["params"],
                      acts=cx["acts"], budget_s=b.step_s, budget=b.text, mode=mode,
                      batch_size=b.batch_size, status=status, note=note, measurements=ms,
                      above=above)


def _unreachable(spec, cands, done, b: Budget, ok) -> BudgetUnreachableError:
    """The error when no measured model is under the budget, naming what was reached."""
    if not ok:
        first = done[min(done)]
        return BudgetUnreachableError(f"no candidate of {spec.name} could be timed for the "
                                      f"budget {b.text}: {first.error}")
    first = done[ok[0]]
    what = (f"the budget {b.text} ({b.step_s * 1e3:.4g} ms per step of {b.batch_size} images)")
    if ok[0] == 0:
        return BudgetUnreachableError(
            f"{what} is below the smallest model reachable from {spec.name} with this "
            f"strategy: {first.name} ({first.flops / 1e6:.4g} MF) takes {first.time_s * 1e3:.4g}"
            " ms here; raise the budget or lower the batch size")
    return BudgetUnreachableError(
        f"{what}: the search stopped after {len(done)} measurements before reaching a model "
        f"under it (the smallest measured, {first.name}, takes {first.time_s * 1e3:.4g} ms); "
        "raise max_measurements")



def _load_fit(fit, mode: str) -> tuple[dict, str]:
    """(coefficients {'flops', 'acts', 'intercept'} of time per image in seconds, where they
    came from) from a fit.json path (--mode benchmark), its dict, or one fit's dict."""
    import json
    import os

    where = "an in-memory fit"
    if isinstance(fit, (str, os.PathLike)):
        where = os.fspath(fit)
        try:
            with open(fit) as f:
                fit = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the runtime fit {where!r} ({e}); make one with "
                              "--mode benchmark (it writes fit.json)") from None
    if not isinstance(fit, dict):
        raise ConfigError(f"a runtime fit is a fit.json path or its dict, got {type(fit).__name__}")
    if "fits" in fit:
        device = (fit.get("env") or {}).get("device_kind")
        where += f" (measured on {device})" if device else ""
        by_mode = fit["fits"].get(mode)
        if by_mode is None:
            raise ConfigError(f"the runtime fit {where} has no mode {mode!r}; it has "
                              f"{', '.join(fit['fits'])}")
        fit = next((by_mode[k] for k in ("flops+acts", "acts", "flops")
                    if (by_mode.get(k) or {}).get("coef")), None) or {}
    coef = fit.get("coef") if "coef" in fit else fit
    if not coef or "intercept" not in coef:
        raise ConfigError(f"the runtime fit {where} has no coefficients (too few models were "
                          "timed?)")
    return {k: float(coef.get(k, 0.0)) for k in ("flops", "acts", "intercept")}, where


def predict_to_time(spec, budget, kind: str | None = None, *, alpha: float | None = None,
                    batch_size: int, fit, mode: str = "train_step") -> TimeResult:
    """A PREDICTION, nothing measured: the largest candidate whose time per step predicted by a
    runtime fit (time per image ~ a*flops + b*acts + c, from `--mode benchmark`'s fit.json or
    timing.fit_runtime) fits the budget. The result says it is one (status 'predicted')."""
    if mode not in MODES:
        raise ConfigError(f"unknown timing mode {mode!r}; valid: {', '.join(MODES)}")
    b = parse_budget(budget, batch_size=batch_size)
    coef, where = _load_fit(fit, mode)
    cands = budget_candidates(spec, kind, alpha=alpha)

    def predicted(c):
        return batch_size * (coef["flops"] * c[2] + coef["acts"] * c[3] + coef["intercept"])

    under = [c for c in cands if predicted(c) <= b.step_s]
    if not under:
        raise BudgetUnreachableError(
            f"the budget {b.text} is below the predicted time of the smallest model reachable "
            f"from {spec.name} ({predicted(cands[0]) * 1e3:.4g} ms per step, by {where})")
    pick = under[-1]
    cx = complexity(pick[1])
    extrapolated = pick is cands[-1]
    return TimeResult(spec=pick[1], factor=pick[0], time_s=predicted(pick), spread_pct=None,
                      flops=cx["flops"], params=cx["params"], acts=cx["acts"],
                      budget_s=b.step_s, budget=b.text, mode=mode, batch_size=batch_size,
                      status="predicted", predicted=True,
                      note=f"PREDICTION by {where}; nothing was measured here"
                           + ("; the largest model of the factor grid" if extrapolated else ""))
