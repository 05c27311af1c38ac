"""The paired parity machinery (benchmarks/parity_paired.py) on a few steps: from the same
weights (pycls's init, converted) on the same batches, our trainer and the torch loop give
the same first-step loss (float32 level). Needs torch and pycls (skipped without them)."""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("pycls")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import parity_paired as pp  # noqa: E402


def test_plan_is_shared_and_per_pass():
    plan = pp.Plan(3, n=100, epochs=2, spe=3, batch=32)
    torch_side, ours = plan.side(), plan.side(positions=9)
    assert (torch_side["idx"] == ours["idx"]).all() and (torch_side["flip"] == ours["flip"]).all()
    assert torch_side["oy"].max() == 7 and ours["oy"].max() == 8   # 0..7 vs 0..8
    for e in range(2):
        epoch = torch_side["idx"][3 * e:3 * e + 3].ravel()
        assert len(set(epoch)) == len(epoch) == 96                 # no repeats in an epoch
    stream = plan.side(shuffle="stream")["idx"]
    assert stream.shape == (6, 32) and not (stream == torch_side["idx"]).all()
    images = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    mean_pad = pp.make_batch(images, torch_side, 0, "mean")
    black = pp.make_batch(images, torch_side, 0, "black")
    border = (mean_pad == 0).all(axis=-1)   # (a pixel's G alone can be 0: the G mean is 123.0)
    assert border.any() and np.allclose(black[border], -np.float32(pp.CIFAR_MEAN)
                                        / np.float32(pp.CIFAR_STD))


@pytest.mark.slow   # ~50 s on the loaded 2-core VM (two model builds, a compile, 12k decodes)
def test_same_weights_same_batches_same_first_step_loss(tmp_path):
    args = pp.family_args("regnety", epochs=1, batch=32, limit=2)
    run = pp.run_seed(args, 0, workdir=str(tmp_path), num_eval=64)
    ours, theirs = run["base"]["losses"], run["torch"]["losses"]
    assert len(ours) == len(theirs) == 2
    assert abs(ours[0] - theirs[0]) <= 1e-5 * abs(theirs[0]), (ours, theirs)
    assert abs(ours[1] - theirs[1]) <= 1e-4 * abs(theirs[1]), (ours, theirs)   # after 1 update
    assert len(run["base"]["top1"]) == len(run["torch"]["top1"]) == 1
