"""Train-step images/s of our models beside timm's same models (AMP + channels-last).

Same architecture on both sides: RegNets are timm's `RegNet` class given our spec's per-stage
widths, depths, group widths and bottleneck ratios (so a dWr-scaled RegNetZ, which timm has no
name for, is still the same network); EfficientNet-B0 is timm's `efficientnet_b0`. Parameter
counts of both sides are reported. Same step on both sides: softmax cross-entropy on random
labels, SGD lr 0.1, momentum 0.9, Nesterov; ours in bfloat16 compute (params float32) through
fastscale_jax.timing.time_model, timm eager under torch.autocast(bfloat16) with channels-last
tensors and cudnn.benchmark (with plan dtype 'float32', as in --smoke: float32 on both sides,
no autocast). Same protocol: warm-up calls, then windows of calls synchronised
only at window edges; median per-step time.
"""

from __future__ import annotations

from accel_check.common import (
    FAIL,
    OK,
    SKIP,
    compile_all,
    lower_like_time_model,
    one_line,
    result,
    timing_config,
)
from torch_compare import time_calls  # benchmarks/ is on sys.path, as for accel_check

TIMM_EFFNET = {"EfficientNet-B0": "efficientnet_b0"}
B0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def timm_model(spec):
    """timm's network with `spec`'s architecture (AnyNet RegNets; EfficientNet-B0)."""
    if spec.family == "effnet":
        from timm.models.efficientnet import _gen_efficientnet

        name = TIMM_EFFNET.get(spec.name.split(" ")[0])
        # timm rounds depth * multiplier up: multiplier 1 gives B0, a tiny one 1 block/stage
        mult = {B0_DEPTHS: 1.0, (1,) * 7: 1e-3}.get(spec.depths)
        if name is None or mult is None:
            raise ValueError(f"{spec.name}: no timm EfficientNet with this architecture")
        return _gen_efficientnet(name, depth_multiplier=mult, num_classes=spec.num_classes)
    from timm.models.regnet import RegNet, RegNetCfg

    if spec.stem_type != "simple_stem_in" or not spec.block_type.startswith("res_bottleneck"):
        raise ValueError(f"{spec.name}: timm's RegNet has a simple stem and bottleneck blocks")
    linear = spec.block_type == "res_bottleneck_linear_block"
    cfg = RegNetCfg(depth=sum(spec.depths), group_size=spec.group_widths[0],
                    bottle_ratio=spec.bot_muls[0], se_ratio=spec.se_r, stem_width=spec.stem_w,
                    downsample=None if linear else "conv1x1", linear_out=linear,
                    num_features=spec.head_w, act_layer=spec.activation)

    class SpecRegNet(RegNet):
        def _get_stage_args(self, cfg, default_stride=2, output_stride=32, drop_path_rate=0.0):
            _, common = super()._get_stage_args(cfg, default_stride, output_stride,
                                                drop_path_rate)
            per_stage = [{"out_chs": w, "stride": s, "dilation": 1, "depth": d,
                          "bottle_ratio": b, "group_size": g, "drop_path_rates": [0.0] * d}
                         for w, s, d, b, g in zip(spec.widths, spec.strides, spec.depths,
                                                  spec.bot_muls, spec.group_widths)]
            return per_stage, common

    return SpecRegNet(cfg, num_classes=spec.num_classes, zero_init_last=False)


def _torch_device(jax_platform):
    """(torch device, None) or (None, reason to skip)."""
    import torch

    if jax_platform == "cpu":
        return torch.device("cpu"), None
    if jax_platform == "gpu" and torch.cuda.is_available():
        return torch.device("cuda"), None
    if jax_platform == "gpu":
        return None, f"torch {torch.__version__} has no CUDA device (torch.cuda.is_available() is False)"
    return None, f"jax runs on {jax_platform}; torch here has no {jax_platform} backend"


def torch_train_step_times(model, *, batch, res, device, warmup, iters, windows, classes,
                           amp=True):
    """(median, min, max) seconds per train step of `model` (under bf16 autocast if amp)."""
    import torch

    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return time_calls(step, warmup, iters, windows, sync=sync)


def _import_torch_timm():
    """(torch, timm, stubbed) or raise ImportError with the reason."""
    import torch
    from torch_compare import _maybe_stub_torchvision  # benchmarks/ is on sys.path

    stubbed = _maybe_stub_torchvision()  # timm imports torchvision; CPU test boxes lack it
    import timm

    return torch, timm, stubbed


def check_timm(plan, threads: int) -> dict:
    import jax

    from fastscale_jax import complexity
    from fastscale_jax.timing import time_model

    p = plan["timm"]
    try:
        torch, timm, stubbed = _import_torch_timm()
    except ImportError as e:
        return result(SKIP, f"torch/timm not importable: {one_line(e)}")
    device, why = _torch_device(jax.devices()[0].platform)
    if device is None:
        return result(SKIP, why)
    pairs = [(label, spec.replace(resolution=p["resolution"] or spec.resolution))
             for label, spec in p["models"]]
    pre = compile_all({label: (lambda s=s: lower_like_time_model(
        s, batch_size=p["batch"], resolution=s.resolution, dtype=p["dtype"]))
        for label, s in pairs}, threads)
    rows, problems = [], []
    for label, spec in pairs:
        row = {"model": label, "spec": spec.name, "resolution": spec.resolution,
               "batch": p["batch"], "prewarm_compile_s": pre[label][3]}
        try:
            ours = time_model(spec, timing_config(), batch_size=p["batch"], dtype=p["dtype"],
                              modes=("train_step",), warmup=p["warmup"], iters=p["iters"],
                              windows=p["windows"])["train_step"]
            if ours.error:
                raise RuntimeError(f"ours: {ours.error}")
            tm = timm_model(spec)
            row.update(params_ours=complexity(spec)["params"],
                       params_timm=sum(q.numel() for q in tm.parameters()),
                       ours_images_per_s=ours.images_per_s, ours_ms=ours.time_s * 1e3,
                       ours_spread_pct=ours.spread_pct, ours_compile_s=ours.compile_s)
            med, lo, hi = torch_train_step_times(
                tm, batch=p["batch"], res=spec.resolution, device=device, warmup=p["warmup"],
                iters=p["iters"], windows=p["windows"], classes=spec.num_classes,
                amp=p["dtype"] == "bfloat16")
            row.update(timm_images_per_s=p["batch"] / med, timm_ms=med * 1e3,
                       timm_spread_pct=(hi - lo) / med * 100)
            row["ratio_ours_over_timm"] = row["ours_images_per_s"] / row["timm_images_per_s"]
            del tm
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 - one model's failure is recorded, others go on
            row["error"] = one_line(e)
            problems.append(f"{label}: {row['error']}")
        rows.append(row)
    ratios = ", ".join(f"{r['model']} {r['ratio_ours_over_timm']:.2f}x" for r in rows
                       if "ratio_ours_over_timm" in r)
    return result(FAIL if problems else OK, problems[0] if problems else f"ours/timm: {ratios}",
                  problems=problems, rows=rows, torch_device=str(device), dtype=p["dtype"],
                  versions={"torch": torch.__version__, "timm": timm.__version__},
                  torchvision_stubbed=stubbed)
