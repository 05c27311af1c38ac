"""pycls / timm weights -> Flax: logits parity with the PyTorch models, and clear errors.

The PyTorch references are pycls 0.1.1 (PyPI) and timm (PyPI, installed with --no-deps) built
in code with random weights and random BN statistics; inputs are small (2 x 64 x 64) so the
whole file runs in well under a minute of compute.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from torch_refs import (RTOL, check_parity, import_timm, inputs, randomize, rel_err,  # noqa: F401
                        torch)

import fastscale_jax as fs
from fastscale_jax import convert

pytest.importorskip("pycls", reason="pycls 0.1.1: pip install --no-deps pycls==0.1.1 yacs simplejson")
from pycls.models.anynet import AnyNet as PyclsAnyNet  # noqa: E402
from pycls.models.effnet import EffNet as PyclsEffNet  # noqa: E402


# ------------------------------------------------------------------------------------------
# helpers


def pycls_model(spec):
    """The pycls 0.1.1 model of an AnyNet / EffNet spec (built from its fields, no cfg files)."""
    if isinstance(spec, fs.AnyNetSpec):
        return PyclsAnyNet(stem_type=spec.stem_type, stem_w=spec.stem_w, block_type=spec.block_type,
                           ds=list(spec.depths), ws=list(spec.widths), ss=list(spec.strides),
                           bms=list(spec.bot_muls), gws=list(spec.group_widths),
                           se_r=spec.se_r or None, nc=spec.num_classes)
    return PyclsEffNet(stem_w=spec.stem_w, ds=list(spec.depths), ws=list(spec.widths),
                       exp_rs=list(spec.exp_ratios), se_r=spec.se_r, ss=list(spec.strides),
                       ks=list(spec.kernels), head_w=spec.head_w, nc=spec.num_classes)


# Small ResNeXt (grouped 3x3, res_stem_in with max-pool, projection and identity shortcuts).
RESNEXT_SMALL = fs.get_model_spec("ResNeXt-50").replace(name="ResNeXt-small", depths=(1, 1, 2, 1))


# ------------------------------------------------------------------------------------------
# pycls parity


@pytest.mark.parametrize("name", ["RegNetX-200MF", "RegNetY-800MF", "EfficientNet-B0", "ResNeXt-small"])
def test_pycls_eval_parity(name):
    spec = RESNEXT_SMALL if name == "ResNeXt-small" else fs.get_model_spec(name)
    tm = randomize(pycls_model(spec))
    check_parity(tm, spec, convert.from_pycls(tm.state_dict(), spec))


def test_pycls_train_mode_parity():
    """Train mode: BN normalises with batch statistics; logits and every BN's updated running
    mean and (unbiased, as PyTorch keeps it) running variance match pycls."""
    spec = fs.get_model_spec("RegNetX-200MF")
    tm = randomize(pycls_model(spec))
    variables = convert.from_pycls(tm.state_dict(), spec)
    xt, xj = inputs(seed=2)
    tm.train()
    with torch.no_grad():
        ref = tm(xt).numpy()
    model = fs.build_model(spec)
    out, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, xj)
    assert rel_err(out, ref) <= RTOL, rel_err(out, ref)
    new = convert.from_pycls(tm.state_dict(), spec)["batch_stats"]
    ours = jax.tree_util.tree_leaves_with_path(upd["batch_stats"])
    theirs = dict(jax.tree_util.tree_leaves_with_path(new))
    before = dict(jax.tree_util.tree_leaves_with_path(variables["batch_stats"]))
    assert len(ours) == len(theirs) and len(ours) > 20
    for path, a in ours:
        name = jax.tree_util.keystr(path)
        assert not np.allclose(a, before[path]), f"{name} was not updated"
        np.testing.assert_allclose(np.asarray(a), theirs[path], rtol=1e-4, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------------------------------
# timm parity


def timm_resnext_small(timm):
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(block=Bottleneck, layers=list(RESNEXT_SMALL.depths), cardinality=32, base_width=4)


@pytest.mark.parametrize("timm_name,name", [("regnety_008", "RegNetY-800MF"),
                                            ("regnetz_005", "RegNetZ-500MF"),
                                            ("efficientnet_b0", "EfficientNet-B0"),
                                            ("resnext_small", "ResNeXt-small")])
def test_timm_eval_parity(timm_name, name):
    timm = import_timm()
    if name == "ResNeXt-small":
        spec, tm = RESNEXT_SMALL, timm_resnext_small(timm)
    else:
        spec, tm = fs.get_model_spec(name), timm.create_model(timm_name, pretrained=False)
    tm = randomize(tm)
    check_parity(tm, spec, convert.from_timm(tm.state_dict(), spec))


# ------------------------------------------------------------------------------------------
# errors


@functools.lru_cache(maxsize=None)
def pycls_state_dict(name):
    return {k: v.numpy() for k, v in randomize(pycls_model(fs.get_model_spec(name))).state_dict().items()}


def test_wrong_model_names_first_mismatching_tensor_with_both_shapes():
    sd = pycls_state_dict("RegNetY-800MF")
    with pytest.raises(ValueError) as e:
        convert.from_pycls(sd, fs.get_model_spec("RegNetY-1.6GF"))
    msg = str(e.value)
    # pycls order: the first block's projection shortcut comes before its branch f.
    assert "'s1.b1.proj.weight'" in msg and "(64, 32, 1, 1)" in msg and "(48, 32, 1, 1)" in msg, msg


def test_missing_and_unused_tensors_are_listed():
    sd = dict(pycls_state_dict("RegNetX-200MF"))
    del sd["s2.b1.f.b_bn.running_var"]
    sd["s9.b1.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as e:
        convert.from_pycls(sd, fs.get_model_spec("RegNetX-200MF"))
    msg = str(e.value)
    assert "missing from the checkpoint (1): s2.b1.f.b_bn.running_var" in msg, msg
    assert "unused (1): s9.b1.extra.weight" in msg, msg


def test_pycls_names_given_as_timm_are_rejected():
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        convert.from_timm(pycls_state_dict("RegNetX-200MF"), fs.get_model_spec("RegNetX-200MF"))


def test_module_prefix_and_num_batches_tracked_are_accepted():
    sd = pycls_state_dict("RegNetX-200MF")
    assert any(k.endswith("num_batches_tracked") for k in sd)
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    v = convert.from_pycls(wrapped, fs.get_model_spec("RegNetX-200MF"))
    np.testing.assert_array_equal(v["params"]["head"]["fc"]["kernel"], sd["head.fc.weight"].T)
    np.testing.assert_array_equal(v["params"]["stem"]["conv"]["kernel"],
                                  sd["stem.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["batch_stats"]["s1_b1"]["f"]["a_bn"]["var"],
                                  sd["s1.b1.f.a_bn.running_var"])


# ------------------------------------------------------------------------------------------
# files: reading checkpoints, saving / loading converted models, the command line


def test_read_checkpoint_formats(tmp_path):
    sd = pycls_state_dict("RegNetX-200MF")
    tsd = {k: torch.from_numpy(v) for k, v in sd.items()}
    torch.save({"epoch": 100, "model_state": tsd, "optimizer_state": {}, "cfg": "MODEL:\n  TYPE: regnet\n"},
               tmp_path / "pycls.pyth")
    torch.save({"state_dict": tsd, "epoch": 3}, tmp_path / "timm_train.pth")
    torch.save(tsd, tmp_path / "plain.pth")
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for f in ("pycls.pyth", "timm_train.pth", "plain.pth", "w.safetensors"):
        got = convert.read_checkpoint(tmp_path / f)
        assert set(got) == set(sd), f
        for k in sd:
            np.testing.assert_array_equal(got[k], sd[k])


def test_non_checkpoint_files_raise_clearly(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not weights\n")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        convert.read_checkpoint(tmp_path / "notes.txt")
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(ValueError, match="could not be read as a PyTorch checkpoint"):
        convert.read_checkpoint(tmp_path / "broken.pth")
    torch.save({"epoch": 1, "note": "no weights"}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match="without weights"):
        convert.read_checkpoint(tmp_path / "meta.pth")
    with pytest.raises(FileNotFoundError):
        convert.read_checkpoint(tmp_path / "absent.pyth")


def test_command_line_and_load_converted(tmp_path, capsys):
    from fastscale_jax.convert.__main__ import main

    spec = fs.get_model_spec("RegNetX-200MF")
    sd = pycls_state_dict("RegNetX-200MF")
    torch.save({"model_state": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "x.pyth")
    assert main(["--source", "pycls", "--model", "regnetx_200mf", str(tmp_path / "x.pyth"),
                 str(tmp_path / "out")]) == 0
    assert "BGR" in capsys.readouterr().out
    name, variables, prep = convert.load_converted(tmp_path / "out")
    assert name == "RegNetX-200MF"
    assert prep == convert.preprocessing_for("pycls", spec)
    assert prep["channel_order"] == "BGR" and prep["crop_ratio"] == 224 / 256
    ref = convert.from_pycls(sd, spec)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, ref)
    meta = json.loads((tmp_path / "out" / "fastscale_meta.json").read_text())
    assert convert.spec_from_dict(meta["spec"]) == spec and meta["source"] == "pycls"
    with pytest.raises(FileExistsError):
        convert.save_converted(tmp_path / "out", ref, spec, source="pycls")
    with pytest.raises(ValueError, match="not a converted model directory"):
        convert.load_converted(tmp_path)


def test_preprocessing_for():
    p = convert.preprocessing_for("pycls")
    assert p["channel_order"] == "BGR" and p["mean"] == (123.675, 116.28, 103.53)
    assert p["std"] == (58.395, 57.12, 57.375)
    t = convert.preprocessing_for("timm", crop_ratio=0.95)
    assert t["channel_order"] == "RGB" and t["mean"] == p["mean"] and t["crop_ratio"] == 0.95
    with pytest.raises(ValueError, match="unknown checkpoint source"):
        convert.preprocessing_for("keras")


def test_import_does_not_import_torch():
    code = "import sys, fastscale_jax as fs; fs.convert.from_pycls; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
