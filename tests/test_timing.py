"""fastscale_jax.timing: compiled timing, XLA cost view, benchmark files, runtime fit, errors."""

import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastscale_jax as fs
from fastscale_jax import config as config_lib
from fastscale_jax import sweep as sweep_lib
from fastscale_jax import AnyNetSpec
from fastscale_jax.timing import check_resolution, fit_runtime, pearson_r, time_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_spec(name="Tiny", stem_type="simple_stem_in", depths=(1, 1), strides=(2, 2), **kw):
    n = len(depths)
    widths = kw.pop("widths", tuple(16 * 2 ** i for i in range(n)))
    return AnyNetSpec(name=name, stem_type=stem_type, stem_w=8,
                      block_type="res_bottleneck_block", depths=depths, widths=widths,
                      strides=strides, bot_muls=(1.0,) * n,
                      group_widths=kw.pop("group_widths", widths),  # dense: fast on XLA:CPU
                      num_classes=10, **{"resolution": 32, "test_resolution": 32, **kw})


def finite_pos(v):
    return v is not None and math.isfinite(v) and v > 0


def test_time_model_all_modes_end_to_end():
    spec = tiny_spec(se_r=0.25)
    res = time_model(spec, batch_size=2, modes=("inference", "fwd_bwd", "train_step"),
                     warmup=1, iters=2, windows=3, dataset_size=1000)
    assert list(res) == ["inference", "fwd_bwd", "train_step"]
    for mode, r in res.items():
        assert r.error is None, r.error
        assert (r.model, r.mode, r.batch_size, r.resolution, r.dtype) == (
            "Tiny", mode, 2, 32, "float32")
        for f in ("lower_s", "compile_s", "time_s", "min_s", "max_s", "images_per_s",
                  "images_per_s_per_device", "epoch_s", "xla_flops", "xla_bytes_accessed"):
            assert finite_pos(getattr(r, f)), (mode, f, getattr(r, f))
        assert len(r.window_times_s) == 3
        assert r.min_s <= r.time_s <= r.max_s
        assert r.spread_pct >= 0 and r.iqr_s >= 0
        assert r.images_per_s == pytest.approx(2 / r.time_s)
        assert r.epoch_s == pytest.approx(1000 / r.images_per_s)
        assert r.mem_argument_bytes > 0 and r.mem_output_bytes > 0
        assert r.finite_outputs is True
        assert r.env["backend"] == "cpu" and r.env["jax"] and r.env["flax"] and r.env["jaxlib"]
        assert r.to_dict()["mode"] == mode
    # the backward pass costs more than the forward, the update more than fwd+bwd
    assert res["fwd_bwd"].xla_flops > 1.5 * res["inference"].xla_flops
    assert res["train_step"].xla_flops > res["fwd_bwd"].xla_flops
    assert res["train_step"].optimizer == "sgd" and res["inference"].optimizer is None
    # the train state is donated: XLA aliases its buffers to the outputs
    assert res["train_step"].mem_alias_bytes > 0


def test_settle_adds_rounds_of_windows_only_when_the_spread_is_too_wide():
    spec = tiny_spec()
    kw = dict(batch_size=2, modes=("train_step",), warmup=1, iters=1, windows=2, remeasure=2)
    wide = time_model(spec, settle=True, max_spread_pct=1e-9, **kw)["train_step"]
    assert wide.error is None and wide.settled == 2
    assert wide.windows == len(wide.window_times_s) == 6
    assert wide.time_s == pytest.approx(float(np.median(wide.window_times_s)))
    calm = time_model(spec, settle=True, max_spread_pct=1e9, **kw)["train_step"]
    plain = time_model(spec, max_spread_pct=1e-9, **kw)["train_step"]  # settle off: as before
    for r in (calm, plain):
        assert r.settled == 0 and r.windows == len(r.window_times_s) == 2


def test_timed_train_step_follows_the_config_recipe():
    """The timed step is the trainer's, built from the config: EMA adds a copy of the params
    and BN statistics to the donated state, AdamW two moment trees to SGD's one."""
    spec = tiny_spec()

    def state_bytes(**changes):
        c = config_lib.base_config()
        for path, v in changes.items():
            section, key = path.split("__")
            c[section][key] = v
        r = time_model(spec, c, batch_size=2, modes=("train_step",), warmup=0, iters=1,
                       windows=1)["train_step"]
        assert r.error is None, r.error
        return r.mem_argument_bytes, r.optimizer

    sgd, name = state_bytes()
    assert name == "sgd"
    ema, _ = state_bytes(train__ema_decay=0.99)
    adamw, name = state_bytes(optim__name="adamw")
    assert name == "adamw"
    params = fs.complexity(spec)["params"] * 4  # float32 bytes (BN stats come on top for EMA)
    assert ema - sgd >= params
    assert adamw - sgd >= 0.9 * params


def test_host_state_is_the_eager_train_state():
    """host_state builds the optimizer's initial state in one jitted program; it must equal
    the eager construction (train.state.new_state on the same host values) leaf for leaf."""
    import jax

    from fastscale_jax.models.host_init import host_variables
    from fastscale_jax.timing.programs import host_state, timed_steps
    from fastscale_jax.train.state import new_state

    for optim, ema in (("sgd", 0.99), ("adamw", 0.0)):
        c = config_lib.base_config()
        c.optim.name, c.train.ema_decay = optim, ema
        _, spec, _, _, steps = timed_steps(tiny_spec(se_r=0.25), c, batch_size=2)
        got = host_state(steps, spec, 3)
        want = jax.device_get(new_state(host_variables(spec, 3), steps.tx,
                                        rng=np.asarray(jax.random.PRNGKey(4)), ema=steps.ema))
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        assert bool(steps.ema) == (ema > 0)


def test_xla_flops_are_twice_the_analytic_multiply_adds():
    # XLA counts 2 flops per multiply-add, plus BN / activation / pooling elementwise ops, and
    # skips the multiply-adds that fall on zero padding. Measured ratios xla / (2 * flops):
    # RegNetX-200MF 0.993 @64, 1.015 @224; RegNetY-800MF 0.985 / 1.013; EfficientNet-B0
    # 1.033 / 1.055 (jax 0.10.2 CPU). 10% tolerance.
    # conv_impl='lax': one XLA convolution per layer (other formulations of grouped /
    # depthwise convs may legitimately do more or fewer flops than the analytic count).
    spec = fs.get_model_spec("RegNetX-200MF")
    r = time_model(spec, batch_size=2, resolution=64, modes=("inference",), warmup=0,
                   iters=1, windows=1, conv_impl="lax")["inference"]
    flops = fs.complexity(spec.replace(resolution=64))["flops"]
    ratio = r.xla_flops / (2 * flops * 2)
    assert 0.9 < ratio < 1.1, ratio


def test_bad_inputs_raise_value_error():
    spec = tiny_spec()
    with pytest.raises(ValueError, match="unknown dtype"):
        time_model(spec, batch_size=2, dtype="float8")
    with pytest.raises(ValueError, match="unknown timing mode"):
        time_model(spec, batch_size=2, modes=("backward",))
    with pytest.raises(ValueError, match="minimum 32"):
        time_model(spec, batch_size=2, resolution=16)
    with pytest.raises(ValueError, match="batch_size must be"):
        time_model(spec, batch_size=0)
    with pytest.raises(ValueError, match="device"):
        time_model(spec, batch_size=2, num_devices=64)
    bad = config_lib.base_config()
    bad.optim.name = "rmsprop-ish"  # the timed train step is the config's recipe
    with pytest.raises(ValueError, match="optim.name='rmsprop-ish'.*valid: sgd"):
        time_model(spec, bad, batch_size=2)
    with pytest.raises(ValueError, match="unknown timing setting 'optimizer'"):
        time_model(spec, batch_size=2, optimizer="sgd")
    # res_stem_in (stride 4) + 4 stride-2 stages downsample by 64: 48 px leaves < 1 px
    deep = tiny_spec(stem_type="res_stem_in", depths=(1, 1, 1, 1), strides=(2, 2, 2, 2))
    with pytest.raises(ValueError, match="downsamples by 64"):
        check_resolution(deep, 48)
    assert check_resolution(deep, 64) == 64


def test_multi_device_sharding_and_divisibility():
    # a fresh process with 2 fake CPU devices (XLA flags must be set before jax starts)
    code = textwrap.dedent("""
        import math
        from fastscale_jax import AnyNetSpec
        from fastscale_jax.timing import time_model
        spec = AnyNetSpec(name="Tiny", stem_type="simple_stem_in", stem_w=8,
                          block_type="res_bottleneck_block", depths=(1,), widths=(16,),
                          strides=(2,), bot_muls=(1.0,), group_widths=(8,), num_classes=10,
                          resolution=32)
        try:
            time_model(spec, batch_size=3, num_devices=2)
            raise SystemExit("no error for batch 3 on 2 devices")
        except ValueError as e:
            assert "not divisible" in str(e), e
        r = time_model(spec, batch_size=4, num_devices=2, modes=("inference", "train_step"),
                       warmup=1, iters=2, windows=2)
        for m, v in r.items():
            assert v.error is None, v.error
            assert v.num_devices == 2 and v.env["num_devices"] == 2
            assert math.isclose(v.images_per_s_per_device, v.images_per_s / 2)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    flops = rng.uniform(2e8, 2e10, 12)
    acts = rng.uniform(1e6, 5e7, 12)
    a, b, c = 3e-12, 4e-10, 2e-3
    t = a * flops + b * acts + c
    f = fit_runtime(flops, acts, t)
    assert f["coef"]["flops"] == pytest.approx(a, rel=1e-6)
    assert f["coef"]["acts"] == pytest.approx(b, rel=1e-6)
    assert f["coef"]["intercept"] == pytest.approx(c, rel=1e-6)
    assert f["r2"] == pytest.approx(1.0, abs=1e-9)
    assert f["loo_rel_err_max"] < 1e-6 and len(f["loo_rel_errs"]) == 12
    # a flops-only model cannot explain the acts term: worse R^2, real held-out error
    f1 = fit_runtime(flops, acts, t, features=("flops",))
    assert f1["r2"] < 0.999 and f1["loo_rel_err_mean"] > 1e-3
    # noise lowers R^2 below 1; too few points give no fit instead of a crash
    noisy = fit_runtime(flops, acts, t * rng.uniform(0.8, 1.2, 12))
    assert 0 < noisy["r2"] < 1
    assert fit_runtime(flops[:2], acts[:2], t[:2])["coef"] is None
    assert math.isnan(fit_runtime(flops[:3], acts[:3], t[:3])["loo_rel_err_mean"])
    assert pearson_r([1, 2, 3], [2, 4, 6.5]) > 0.99 and math.isnan(pearson_r([1], [1]))


def _small_timing(c, modes=("inference",)):
    c.timing.batch_size = 2
    c.timing.iters = 2
    c.timing.windows = 2
    c.timing.warmup = 1
    c.timing.modes = modes
    return c


def test_benchmark_family_writes_csv_json_plots_and_fit(tmp_path, capsys):
    from fastscale_jax.main import run

    c = _small_timing(config_lib.base_config())
    c.family.base = "RegNetX-200MF"
    c.family.kinds = ("dwr",)
    c.family.factors = (1.0, 4.0)
    c.timing.resolution = 32  # every member timed at 32 px (model.* would describe the base)
    out = run(c, str(tmp_path), mode="benchmark")
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "benchmark.csv")))
    assert len(rows) == 2 and [r["factor"] for r in rows] == ["1.0", "4.0"]
    for r in rows:
        assert r["error"] == "" and r["kind"] == "dwr" and r["resolution"] == "32"
        assert float(r["inference_time_ms"]) > 0 and float(r["inference_images_per_s"]) > 0
        assert float(r["inference_compile_s"]) > 0 and float(r["inference_xla_flops"]) > 0
        assert 0.8 < float(r["inference_xla_flops_ratio"]) < 1.2
        assert r["device_kind"] and r["jax"]
    # x4 dwr flops, but timing.resolution pins both members to 32 px: only d and w grow
    assert 1.5 * int(rows[0]["flops"]) < int(rows[1]["flops"]) < 4 * int(rows[0]["flops"])
    data = json.load(open(tmp_path / "benchmark.json"))
    assert len(data["rows"]) == 2 and len(data["results"]) == 2
    assert data["env"]["backend"] == "cpu" and data["settings"]["batch_size"] == 2
    fit = json.load(open(tmp_path / "fit.json"))
    assert set(fit["fits"]["inference"]) == {"flops+acts", "flops", "acts"}
    assert fit["fits"]["inference"]["flops"]["n"] == 2
    for name in ("benchmark_inference.png", "family_acts_vs_flops.png",
                 "family_runtime_vs_flops_inference.png"):
        p = tmp_path / name
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000, name
    assert "RegNetX-200MF" in printed and "inference ms" in printed
    assert out["rows"][0]["flops"] == int(rows[0]["flops"])


def test_failing_model_does_not_abort_sweep(tmp_path, monkeypatch):
    from fastscale_jax.timing import benchmark

    good = tiny_spec("Good", depths=(1, 2))  # not the same network as Boom (timed once)
    # 48 px through a network that downsamples by 64: too small to run
    bad = tiny_spec("Bad", stem_type="res_stem_in", depths=(1, 1, 1, 1), strides=(2, 2, 2, 2),
                    resolution=48)
    fam = [({"model": "Bad", "kind": "x", "factor": 1.0}, bad),
           ({"model": "Boom", "kind": "x", "factor": 2.0}, tiny_spec("Boom")),
           ({"model": "Good", "kind": "x", "factor": 4.0}, good)]
    monkeypatch.setattr(sweep_lib, "resolve_family", lambda cfg: fam)
    real = benchmark.time_model

    def flaky(spec, config=None, **kw):  # an XLA-style failure for one member
        if spec.name == "Boom":
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory while compiling")
        return real(spec, config, **kw)

    monkeypatch.setattr(benchmark, "time_model", flaky)
    out = benchmark.run_benchmark(_small_timing(config_lib.base_config()), str(tmp_path),
                                  progress=False)
    rows = list(csv.DictReader(open(tmp_path / "benchmark.csv")))
    assert [r["name"] for r in rows] == ["Bad", "Boom", "Good"]
    assert "resolution 48 is too small" in rows[0]["error"] and rows[0]["inference_time_ms"] == ""
    assert "RESOURCE_EXHAUSTED" in rows[1]["error"]
    assert rows[2]["error"] == "" and float(rows[2]["inference_time_ms"]) > 0
    assert out["rows"][2]["inference_images_per_s"] > 0
    assert (tmp_path / "benchmark_inference.png").exists()


def test_global_settings_errors_raise_before_timing(tmp_path):
    from fastscale_jax.timing.benchmark import run_benchmark

    c = _small_timing(config_lib.base_config())
    c.timing.dtype = "int7"
    with pytest.raises(ValueError, match="unknown dtype"):
        run_benchmark(c, str(tmp_path), progress=False)
    assert not (tmp_path / "benchmark.csv").exists()


def test_time_interleaved_times_every_model_in_every_window():
    small, big = tiny_spec("small"), tiny_spec("big").replace(widths=(32, 64))
    stages = []
    res = fs.timing.time_interleaved([small, big], None, "train_step", batch_size=2, iters=2,
                                     windows=3, warmup=1, on_stage=stages.append)
    assert [r.model for r in res] == ["small", "big"] and all(r.ok for r in res)
    assert all(len(r.window_times_s) == 3 and r.time_s > 0 for r in res)
    assert stages.count("window 1/3") == 1 and stages[0].startswith("small: compiling")
    bad = tiny_spec("bad", stem_type="res_stem_in", depths=(1, 1, 1, 1),
                    strides=(2, 2, 2, 2), resolution=48)
    with pytest.raises(fs.errors.ConfigError, match="downsamples"):  # checked before compiling
        fs.timing.time_interleaved([small, bad], None, "inference", batch_size=2)


def test_benchmark_saves_as_it_goes_resumes_and_dedupes(tmp_path, monkeypatch):
    from fastscale_jax.timing import benchmark

    specs = [tiny_spec(f"m{i}", depths=(1, i + 1)) for i in range(4)]
    fam = [({"model": s.name, "kind": "x", "factor": 1.0}, s) for s in specs]
    fam.append(({"model": "m1-again", "kind": "y", "factor": 2.0}, specs[1].replace(name="again")))
    calls = []

    def fake(spec, config=None, on_stage=None, **kw):
        if len(calls) == 2 and fake.stop:
            raise KeyboardInterrupt  # Ctrl-C during the third model
        calls.append(spec.name)
        spread = 50.0 if spec.name == "m3" else 1.0  # m3 stays noisy
        return {m: fs.timing.TimingResult(model=spec.name, mode=m, batch_size=2, resolution=32,
                                          dtype="float32", num_devices=1, warmup=0, iters=1,
                                          windows=1, dataset_size=1, time_s=0.01, min_s=0.01,
                                          max_s=0.01, spread_pct=spread, compile_s=0.1,
                                          images_per_s=200.0)
                for m in kw["modes"]}

    fake.stop = True
    monkeypatch.setattr(benchmark, "time_model", fake)
    monkeypatch.setattr(sweep_lib, "resolve_family", lambda cfg: fam)
    c = _small_timing(config_lib.base_config())
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark(c, str(tmp_path), progress=False)
    lines = (tmp_path / "benchmark_rows.jsonl").read_text().splitlines()
    assert len(lines) == 2 and calls == ["m0", "m1"]  # measured rows are on disk
    (tmp_path / "benchmark_rows.jsonl").write_text("\n".join(lines) + '\n{"key": "to')  # torn
    fake.stop = False
    out = benchmark.run_benchmark(c, str(tmp_path), progress=False)
    assert calls == ["m0", "m1", "m2", "m3", "m3", "m3"]  # the rest; m3 re-measured twice
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["again"]["kind"] == "y" and rows["again"]["factor"] == 2.0  # timed once
    assert rows["m3"]["inference_noisy"] and not rows["m0"]["inference_noisy"]
    assert rows["m3"]["remeasured"] == 2
    assert len(list(csv.DictReader(open(tmp_path / "benchmark.csv")))) == 5
