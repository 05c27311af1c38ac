"""PyTorch references for the parity tests: torch (CPU), timm without torchvision, and the
random weights / inputs / error measure the tests share. Importing this module skips the
importing test module when torch is not installed."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the parity tests need CPU torch: pip install torch==2.13.0")

import fastscale_jax as fs  # noqa: E402

# PyTorch's OpenMP threads spin against XLA's on a small CPU (4.7 s vs 0.05 s per forward).
torch.set_num_threads(1)

RTOL = 1e-4  # max |flax - torch| / max |torch|, float32
RES = 64


def randomize(model, seed=0):
    """Random BN affine and running statistics, random classifier (convs keep their random init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.2, generator=g)
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 0.05, generator=g)
                m.bias.normal_(0.0, 0.05, generator=g)
    return model.eval()


def inputs(seed=1):
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(seed))
    return x, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


@functools.lru_cache(maxsize=None)
def flax_eval_fn(spec):
    """One compiled eval function per spec, shared by the pycls and timm tests of a model."""
    model = fs.build_model(spec)
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def rel_err(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def check_parity(torch_model, spec, variables):
    xt, xj = inputs()
    with torch.no_grad():
        ref = torch_model(xt).numpy()
    out = flax_eval_fn(spec)(variables, xj)
    err = rel_err(out, ref)
    print(f"{spec.name}: max relative error {err:.2e}")
    assert out.shape == ref.shape and err <= RTOL, f"{spec.name}: relative error {err:.2e}"


def import_timm():
    """timm (pip install --no-deps timm). timm imports torchvision at import time only for
    helpers these models do not use (FrozenBatchNorm2d, data transforms); when torchvision is
    missing or broken beside this torch, stand-in modules let timm's model code import."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed: pip install --no-deps timm")
    try:
        return importlib.import_module("timm")
    except (ImportError, RuntimeError, AttributeError, OSError):
        pass
    for name in [n for n in sys.modules if n == "timm" or n.startswith(("timm.", "torchvision"))]:
        del sys.modules[name]
    stubs = _stub_torchvision()
    try:
        return importlib.import_module("timm")
    finally:  # timm keeps what it bound; nobody else should see the stand-ins
        for name in stubs:
            sys.modules.pop(name, None)


def _stub_torchvision():
    import enum

    names = []

    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        names.append(name)
        return m

    class InterpolationMode(enum.Enum):
        NEAREST, BILINEAR, BICUBIC = "nearest", "bilinear", "bicubic"
        BOX, HAMMING, LANCZOS = "box", "hamming", "lanczos"

    class _Unavailable:
        def __init__(self, *a, **k):
            raise RuntimeError("torchvision is not available (test stand-in)")

    placeholders = lambda names: {n: type(n, (_Unavailable,), {}) for n in names}  # noqa: E731
    tv = mod("torchvision", __version__="0.0.0+stub")
    misc = mod("torchvision.ops.misc", FrozenBatchNorm2d=type("FrozenBatchNorm2d", (torch.nn.Module,), {}))
    tv.ops = mod("torchvision.ops", misc=misc)
    func = mod("torchvision.transforms.functional", InterpolationMode=InterpolationMode)
    tv.transforms = mod("torchvision.transforms", functional=func, InterpolationMode=InterpolationMode,
                        **placeholders(["Compose", "ToTensor", "Normalize", "RandomResizedCrop",
                                        "CenterCrop", "Resize", "RandomHorizontalFlip", "ColorJitter",
                                        "RandomCrop", "Lambda", "RandomApply", "RandomGrayscale"]))
    tv.datasets = mod("torchvision.datasets", **placeholders(
        ["CIFAR100", "CIFAR10", "MNIST", "KMNIST", "FashionMNIST", "ImageFolder", "Places365",
         "INaturalist", "QMNIST", "ImageNet"]))
    return names
