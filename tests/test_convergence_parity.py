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


def test_a_test_folder_replaces_the_demo_test_split_in_label_order(tmp_path):
    from PIL import Image

    names = [str(c) for c in np.load(pp.DEMO)["class_names"]]
    rng = np.random.default_rng(0)
    for label, name in enumerate(names):
        (tmp_path / name).mkdir()
        for k in range(2):
            im = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(im).save(tmp_path / name / f"{k:04d}.jpg", quality=95)
    images = pp.load_images("pil", test_dir=str(tmp_path))
    x, y = images["test"]
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert list(y) == [c for c in range(10) for _ in range(2)]
    assert len(images["train"][1]) == 10_000          # the train split is still the demo's
    (tmp_path / "extra").mkdir()
    with pytest.raises(SystemExit, match="class folders"):
        pp.load_images("pil", test_dir=str(tmp_path))


def test_the_control_changes_the_weights_by_about_its_scale_only():
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    twin = pp.jittered(model, seed=1)
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        if not a.is_floating_point():
            assert torch.equal(a, b)
            continue
        rel = ((b - a).abs() / a.abs().clamp_min(1e-30))[a != 0]
        assert rel.numel() == 0 or 1e-8 < float(rel.max()) < 1e-5, k   # ~1e-6, not zero
    again = pp.jittered(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(),
                                                  again.state_dict().values()))


def test_seeds_evaluated_on_different_test_sets_are_not_summarised_together():
    run = {"seed": 0, "steps_per_epoch": 1, "torch": {"top1": [0.5], "losses": [1.0]},
           "base": {"top1": [0.5], "losses": [1.0]}}
    with pytest.raises(SystemExit, match="different test sets"):
        pp.summarise([dict(run, num_eval=2000), dict(run, seed=1, num_eval=10000)])
    out = pp.summarise([dict(run, num_eval=10000, torch_jitter={"top1": [0.52]}),
                        dict(run, seed=1, num_eval=10000, torch_jitter={"top1": [0.49]})])
    assert out["control"]["final_diff_per_seed"] == pytest.approx([2.0, -1.0])


def test_an_ablation_run_on_later_seeds_only_is_still_summarised():
    def run(seed, **extra):
        return dict({"seed": seed, "steps_per_epoch": 1, "num_eval": 10,
                     "torch": {"top1": [0.5], "losses": [1.0]},
                     "base": {"top1": [0.5], "losses": [1.0]}}, **extra)
    abl = {"top1": [0.47], "settings": {"pad_fill": "black"}}
    out = pp.summarise([run(0), run(1), run(2, all=abl), run(3, all=dict(abl, top1=[0.45]))])
    assert out["ablations"]["all"]["seeds"] == [2, 3]
    assert out["ablations"]["all"]["effect_vs_base_mean"] == pytest.approx(-4.0)


def test_a_workdir_of_runs_made_with_other_settings_is_refused(tmp_path):
    import convergence_parity as cp

    work = str(tmp_path / "work")
    cp.claim_workdir(cp.parse_args(["--workdir", work, "--epochs", "2"]))
    cp.claim_workdir(cp.parse_args(["--workdir", work, "--epochs", "2", "--seeds", "9"]))
    with pytest.raises(SystemExit, match="--epochs 2 there, 3 here"):
        cp.claim_workdir(cp.parse_args(["--workdir", work, "--epochs", "3"]))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "torch_seed0.json").write_text("{}")
    with pytest.raises(SystemExit, match="no run_args.json"):
        cp.claim_workdir(cp.parse_args(["--workdir", str(legacy)]))


def test_paired_seeds_can_be_counted_per_family():
    import convergence_parity as cp

    a = cp.parse_args(["--paired", "--seeds", "4", "2", "--first-seed", "1"])
    assert list(cp.seeds(a, "regnety")) == [1, 2, 3, 4] and list(cp.seeds(a, "effnet")) == [1, 2]
    with pytest.raises(SystemExit, match="give one count"):
        cp.seeds(a)  # the unpaired sides take one count
