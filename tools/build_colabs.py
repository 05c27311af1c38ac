"""Write the notebooks under colabs/ from the cell sources below (no outputs stored).

    python tools/build_colabs.py            # rewrite colabs/*.ipynb

Notebooks only call the library; keep logic in fastscale_jax/, not here.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "colabs")


def install_cell(extras: str = "train,cpu") -> str:
    """The first code cell: install fastscale-jax[extras] unless it is importable, detect a
    folder that shadows the package, and say where the package was imported from."""
    return f'''# Installs fastscale-jax[{extras}] unless it is already installed (a CPU runtime is enough for the
# default, small settings). Not on your package index? Set FASTSCALE_JAX_SOURCE first, e.g.
#   %env FASTSCALE_JAX_SOURCE=git+https://github.com/<owner>/fastscale_jax
#   %env FASTSCALE_JAX_SOURCE=/content/fastscale_jax-0.1.0-py3-none-any.whl   (or a clone's folder)
import importlib, importlib.util, os, subprocess, sys
have_tf = all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorflow_datasets"))
EXTRAS = ",".join(e for e in "{extras}".split(",") if e != "train" or not have_tf)  # keep Colab's TF
def _shadow():  # a folder named fastscale_jax (e.g. a clone) that Python imports as an empty namespace
    found = importlib.util.find_spec("fastscale_jax")
    return list(found.submodule_search_locations)[0] if found and found.origin is None else None
found, folder = importlib.util.find_spec("fastscale_jax"), _shadow()
if found is None or folder:
    src = os.environ.get("FASTSCALE_JAX_SOURCE") or (
        folder if folder and os.path.isfile(os.path.join(folder, "pyproject.toml")) else "")
    tag = f"[{{EXTRAS}}]" if EXTRAS else ""
    req = (f"fastscale-jax{{tag}} @ {{src}}" if "://" in src or src.startswith("git+") else
           f"{{src}}{{tag}}" if src else f"fastscale-jax{{tag}}")
    if subprocess.call([sys.executable, "-m", "pip", "install", "-q", req]) != 0:
        raise RuntimeError(f"pip could not install {{req!r}}. Set FASTSCALE_JAX_SOURCE to a git URL "
                           "(git+https://github.com/<owner>/fastscale_jax) or a wheel's path, then re-run.")
    importlib.invalidate_caches()
    if _shadow():
        raise RuntimeError(f"the folder {{_shadow()}} hides the installed fastscale_jax package: run "
                           f"os.chdir({{_shadow()!r}}) (a clone's root holds the package) or rename it.")
import fastscale_jax
print("fastscale_jax", fastscale_jax.__version__, "from", os.path.dirname(fastscale_jax.__file__))'''


INSTALL = install_cell()  # training input + oneDNN CPU convolutions

NOTEBOOKS = {}

NOTEBOOKS["01_scaling_explorer.ipynb"] = [
    new_markdown_cell("""# Scaling explorer

*Fast and Accurate Model Scaling* (Dollár, Singh, Girshick, CVPR 2021) in JAX: list the pycls
model zoo, count a model's complexity, scale it with d, w, r, dwr and dWr, and see how flops,
params and activations grow — the paper's Tables 1–3 made tangible. Flops are multiply-adds,
counted for one image at the model's train resolution, exactly as pycls counts them."""),
    new_code_cell(install_cell("cpu")),
    new_code_cell('''%matplotlib inline
import fastscale_jax as fs
from fastscale_jax import report
print(len(fs.list_models()), "models:", ", ".join(fs.list_models()))'''),
    new_code_cell('''BASE = "RegNetZ-500MF"     # try "RegNetY-800MF" or "EfficientNet-B0"
spec = fs.get_model_spec(BASE)
print(report.model_table(spec))'''),
    new_markdown_cell("""## Simple and compound scaling

Scaling by a flops factor *s* multiplies depth, width and resolution by *s* to the exponents
below (pycls's `scaling_factors`). `dWr` is fast compound scaling (alpha = 0.8)."""),
    new_code_cell('''KINDS = ["d", "w", "r", "dwr", "dWr"]
FACTORS = [1, 2, 4, 8, 16]
for k in KINDS:
    e = fs.scaling_exponents(k)
    g = fs.theoretical_growth(k)
    print(f"{k:>4}: depth s^{e.d:.3f}  width s^{e.w:.3f}  res s^{e.r:.3f}  ->  "
          f"params s^{g['params']:.2f}  acts s^{g['acts']:.2f}")'''),
    new_code_cell('''family = [({"kind": k, "factor": f}, fs.scale(spec, f, k)) for k in KINDS for f in FACTORS]
print(report.family_table(family))'''),
    new_code_cell('''import matplotlib.pyplot as plt
rows = report.family_rows(family)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for k in KINDS:
    rs = [r for r in rows if r["kind"] == k]
    for ax, key in zip(axes, ["params", "acts"]):
        ax.loglog([r["flops"] for r in rs], [r[key] for r in rs], "o-", label=k)
for ax, key in zip(axes, ["params", "acts"]):
    ax.set_xlabel("flops (multiply-adds)"); ax.set_ylabel(key); ax.legend(); ax.grid(True, which="both", alpha=.3)
fig.suptitle(f"{BASE}: growth of params and activations with flops")
plt.show()'''),
    new_markdown_cell("""## The alpha sweep

alpha = 0 scales only depth and resolution, 1/3 is uniform (dwr), 0.8 is dWr, 1 only width.
Activations — the best predictor of runtime — grow slowest for large alpha."""),
    new_code_cell('''ALPHAS = [0, 1/3, 0.5, 2/3, 0.8, 1]
sweep = [({"kind": f"alpha={a:.2f}", "alpha": a, "factor": f}, fs.scale(spec, f, alpha=a))
         for a in ALPHAS for f in FACTORS]
for g in report.growth_by_kind(report.family_rows(sweep)):
    print(f"{g['kind']:>11}: acts fit s^{g['acts_fit']:.3f} (theory {g['acts_theory']:.3f}), "
          f"params fit s^{g['params_fit']:.3f} (theory {g['params_theory']:.3f})")'''),
    new_markdown_cell("""## A model by flops target

`scale_to` finds the scaled model whose flops are closest to a target."""),
    new_code_cell('''res = fs.scale_to(spec, "4GF", "dWr")
print(f"factor {res.factor:.3f} -> {res.flops / 1e9:.3f} GF")
print(report.model_table(res.spec))'''),
]
NOTEBOOKS["02_runtime_on_your_hardware.ipynb"] = [
    new_markdown_cell("""# Runtime on your hardware

The paper's claim: across scaled models, **activations** predict runtime far better than flops
or params. This notebook measures that on whatever this runtime has (CPU, GPU or TPU):
it times a small scaled family with XLA-compiled functions (compile excluded, warm-up
excluded, median of timed windows), plots runtime against flops / params / acts with Pearson
r, fits `time = a*flops + b*acts + c`, and predicts the cost of a model before training it.

Defaults are small so that a CPU runtime finishes in a few minutes. On a GPU runtime set
`BASE_RES = None`, `BATCH = 64` and `MODES = ("inference", "train_step")`."""),
    new_code_cell(install_cell("cpu")),
    new_code_cell('''%matplotlib inline
import jax
import fastscale_jax as fs
from fastscale_jax import timing
from fastscale_jax.timing import benchmark, plots
print(jax.devices())

BASE, KINDS, FACTORS = "RegNetZ-500MF", ("dwr", "dWr"), (1, 2, 4)
BASE_RES, BATCH, MODES = 64, 4, ("inference",)   # small CPU settings
base = fs.get_model_spec(BASE)
if BASE_RES:
    base = base.replace(resolution=BASE_RES, test_resolution=BASE_RES)
family = [({"model": f"{BASE} x{f} {k}", "kind": k, "factor": f}, fs.scale(base, f, k))
          for k in KINDS for f in FACTORS]'''),
    new_code_cell('''settings = dict(batch_size=BATCH, resolution=None, dtype="float32", modes=MODES,
                warmup=1, iters=3, windows=3, num_devices=1)
rows, results = benchmark.benchmark_family(family, settings)
print(benchmark.summary_table(rows, MODES))'''),
    new_code_cell('''import os, tempfile
from IPython.display import Image, display
out = tempfile.mkdtemp()
display(Image(plots.runtime_vs_complexity(rows, MODES[0], os.path.join(out, "fig2.png"), timing.environment())))
for path in plots.family_plots(rows, MODES[0], out):
    display(Image(path))'''),
    new_markdown_cell("""## A runtime model, and a prediction before training

Fit the measured times with flops and activations, then predict an unseen, larger model from
its analytic complexity alone — and check the prediction by timing it."""),
    new_code_cell('''ok = [r for r in rows if not r.get("error")]
key = f"{MODES[0]}_time_ms"
fit = timing.fit_runtime([r["flops"] for r in ok], [r["acts"] for r in ok], [r[key] for r in ok])
print("coef:", fit["coef"], " R^2 = %.3f" % fit["r2"], " leave-one-out rel. err = %.2f" % fit["loo_rel_err_mean"])

new = fs.scale(base, 8, "dWr")
cx = fs.complexity(new)
c = fit["coef"]
pred = c["flops"] * cx["flops"] + c["acts"] * cx["acts"] + c["intercept"]
meas = timing.time_model(new, **settings)[MODES[0]].time_s
print(f"{new.name}: predicted {pred:.1f} ms, measured {meas * 1e3:.1f} ms")'''),
    new_markdown_cell("""## Scale to a time budget, and compare strategies at equal runtime

The paper's message as a tool: give a time per step and `fs.scale_to_time` returns the largest
model of a strategy whose *measured* step (the same compiled step as above) fits it here,
with every measurement it took. The budget below is a multiple of the base's own time so that
it means something on any hardware; give one in absolute terms (`"40ms"`, `"1000img/s"`) for
your own runs. At one budget, the flops each strategy reaches say how much model it buys per
millisecond on this machine (on accelerators the paper finds dWr ahead of dwr)."""),
    new_code_cell('''t_base = timing.time_model(base, **settings)[MODES[0]].time_s
BUDGET = 3 * t_base                                  # seconds per step of BATCH images
SEARCH = dict(batch_size=BATCH, mode=MODES[0], tolerance=0.1, max_measurements=5,
              warmup=1, iters=3, windows=3)        # small: a CPU runtime's times are noisy
caches = {"dWr": {}, "dwr": {}}                    # a model timed once is reused, not retimed
res = fs.scale_to_time(base, BUDGET, "dWr", cache=caches["dWr"], **SEARCH)
print(f"budget {BUDGET * 1e3:.2f} ms: {res.spec.name}, {res.flops / 1e6:.1f} MF, measured "
      f"{res.time_s * 1e3:.2f} ms ({res.ratio:.2f} x the budget; {res.status})\\n{res.note}")
for m in res.measurements:
    print(f"  {m.name:<34} {m.flops / 1e6:7.1f} MF  {m.time_s * 1e3:7.2f} ms")'''),
    new_code_cell('''for kind in ("dwr", "dWr"):                        # add "w", "d", alphas on a GPU runtime
    r = fs.scale_to_time(base, BUDGET, kind, cache=caches[kind], **SEARCH)
    print(f"{kind:>4}: {r.flops / 1e6:7.1f} MF, {r.acts / 1e3:6.0f}k acts at "
          f"{r.time_s * 1e3:6.2f} ms ({r.ratio:.2f} x the budget, {len(r.measurements)} timed; "
          f"{r.status})")'''),
]

NOTEBOOKS["03_train.ipynb"] = [
    new_markdown_cell("""# Train a dWr-scaled RegNetZ

Trains a small fast-compound-scaled (dWr) RegNetZ on the embedded demo data (a 10k-image
CIFAR-10 subset shipped in the package), resumes from its checkpoint, evaluates, and plots the
curves — the same code path as `python launch.py --config configs/regnetz_dWr.py:demo`.

Defaults are a few dozen steps so that a CPU runtime finishes in minutes; `STEPS = 300` is the
`:demo` length (41% top-1 on the demo test images, ~3 CPU-minutes on 2 cores). For ImageNet on a GPU/TPU runtime, use the 4GF recipe:
`config = configs.load("regnetz_dWr:4GF")`, `config.data.name = "imagenet2012"` and
`config.data.data_dir = "<your TFDS dir>"` (prepare it with `tfds build imagenet2012`)."""),
    new_code_cell(INSTALL),
    new_code_cell('''%matplotlib inline
import json, os, tempfile
from fastscale_jax import config as config_lib, configs, main, report
from fastscale_jax.cli import report as one_line  # a setting you can fix: one `error:` line

STEPS = 30
config = configs.load("regnetz_dWr:demo")   # the packaged configs/regnetz_dWr.py, arg 'demo'
config.train.num_train_steps = STEPS
config.train.global_batch_size = 32
config.train.progress = False
config.checkpoint.every_steps = STEPS // 2
print(report.model_table(config_lib.resolve_spec(config)))
workdir = tempfile.mkdtemp()'''),
    new_markdown_cell("""## Train for half the steps, then resume

The first call stops early (as if the job had been pre-empted); the second call finds the
checkpoint in `workdir` and continues the same schedule."""),
    new_code_cell('''config.train.num_train_steps = STEPS // 2
first = one_line(main.run, config, workdir, "train")
config.train.num_train_steps = STEPS
second = one_line(main.run, config, workdir, "train")
print("resumed at step", STEPS // 2, "-> finished at step", second["step"])'''),
    new_code_cell('''res = one_line(main.run, config, workdir, "eval")
print({k: v for k, v in res.items() if isinstance(v, float)})'''),
    new_code_cell('''%matplotlib inline
import matplotlib.pyplot as plt
rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
train = [r for r in rows if r.get("split") == "train"]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot([r["step"] for r in train], [r["loss"] for r in train], "o-"); ax[0].set_xlabel("step"); ax[0].set_ylabel("train loss")
ax[1].plot([r["step"] for r in train], [r["lr"] for r in train], "o-"); ax[1].set_xlabel("step"); ax[1].set_ylabel("learning rate")
plt.show()'''),
]


NOTEBOOKS["04_pretrained_weights.ipynb"] = [
    new_markdown_cell("""# Pretrained weights: pycls / timm PyTorch checkpoints in JAX

pycls published ImageNet weights for every RegNetX/Y and EfficientNet of its zoo (`.pyth`
files, see pycls's MODEL_ZOO.md), timm for many more (`.pth` / `.safetensors`).
`fastscale_jax.convert` maps them onto our Flax models, checking every tensor name and shape,
saves an orbax checkpoint, and records the preprocessing the weights expect (pycls: BGR).

Set `WEIGHTS` to a downloaded checkpoint. With `WEIGHTS = None` (the default, so that this
notebook runs offline) it writes a stand-in pycls checkpoint with *random* weights: the
predictions below are then meaningless, but every step is the real one.
Needs PyTorch only to read `.pyth`/`.pth` pickles: `pip install torch` (CPU is fine) and, for the
stand-in, `pip install --no-deps pycls==0.1.1 yacs simplejson`."""),
    new_code_cell(install_cell("train,cpu,torch")),
    new_code_cell('''%matplotlib inline
import os, tempfile
import jax, numpy as np
import fastscale_jax as fs
from fastscale_jax import convert

MODEL = "RegNetY-800MF"
WEIGHTS = None   # e.g. "RegNetY-800MF_dds_8gpu.pyth" from the pycls model zoo
SOURCE = "pycls"
spec = fs.get_model_spec(MODEL)
work = tempfile.mkdtemp()'''),
    new_code_cell('''if WEIGHTS is None:  # offline stand-in: a pycls model with random weights, saved as pycls does
    import torch
    from pycls.models.anynet import AnyNet
    torch.manual_seed(0)
    tm = AnyNet(stem_type=spec.stem_type, stem_w=spec.stem_w, block_type=spec.block_type,
                ds=list(spec.depths), ws=list(spec.widths), ss=list(spec.strides),
                bms=list(spec.bot_muls), gws=list(spec.group_widths), se_r=spec.se_r, nc=1000)
    WEIGHTS = os.path.join(work, "standin.pyth")
    torch.save({"model_state": tm.state_dict(), "epoch": 0}, WEIGHTS)
state_dict = convert.read_checkpoint(WEIGHTS)
print(len(state_dict), "tensors, e.g.", list(state_dict)[:3])'''),
    new_code_cell('''variables = convert.from_pycls(state_dict, spec)   # every tensor used once, shapes checked
prep = convert.preprocessing_for(SOURCE, spec)
print(prep)
out_dir = os.path.join(work, "regnety_800mf_flax")
convert.save_converted(out_dir, variables, spec, source=SOURCE, preprocessing=prep, source_file=WEIGHTS)
name, variables, prep = convert.load_converted(out_dir)
print("saved and reloaded", name, "->", out_dir)'''),
    new_markdown_cell("""## Inference on a few images

The embedded demo images (CIFAR-10, 32 px) are resized to the model's test resolution and
normalised exactly as the weights expect (channel order, mean, std)."""),
    new_code_cell('''from fastscale_jax.data import config as data_config, pipeline
dcfg = data_config.default_data_config()
dcfg.channel_order, dcfg.mean, dcfg.std = prep["channel_order"], prep["mean"], prep["std"]
batch = next(iter(pipeline.eval_iterator(dcfg, global_batch_size=8, image_size=spec.resolution,
                                         process_index=0, process_count=1, local_device_count=1)))
images = batch["image"][0]
model = fs.build_model(spec)
logits = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
top5 = np.argsort(-np.asarray(logits), axis=1)[:, :5]
print("top-5 ImageNet class ids per image:\\n", top5)'''),
    new_code_cell('''import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 8, figsize=(14, 2))
mean, std = np.array(prep["mean"]), np.array(prep["std"])
for ax, img, t in zip(axes, images, top5):
    rgb = img[..., ::-1] if prep["channel_order"] == "BGR" else img
    ax.imshow(np.clip((rgb * std + mean) / 255, 0, 1)); ax.set_title(f"top-1 {t[0]}", fontsize=8); ax.axis("off")
plt.show()'''),
]


NOTEBOOKS["05_scaling_study.ipynb"] = [
    new_markdown_cell("""# A scaling study: the paper's experiment end to end

A *study* trains a base model scaled by several strategies (here `dwr`, uniform compound
scaling, and `dWr`, the paper's fast compound scaling) by several flops factors, with one or
more seeds — every member an ordinary training run in its own process and sub-folder — then
collects one row per run, a table aggregated over seeds and the paper's plots: error vs flops,
vs activations and vs epoch time (measured in the runs themselves), and epoch time vs flops.
It is what `python launch.py --config configs/study.py:demo --workdir DIR --mode study` runs.

The defaults below are a *tiny* study (4 runs of a few steps on the embedded CIFAR-10 subset)
so that a CPU runtime finishes in a couple of minutes: it shows the machinery, not evidence
about the paper's claim. Set `STUDY_DIR` to the folder of a study run from the command line to
load it instead (nothing is retrained: finished runs are skipped)."""),
    new_code_cell(INSTALL),
    new_code_cell('''import os, tempfile
from IPython.display import Image, display
from fastscale_jax import configs
from fastscale_jax.study import grid, run_study

STUDY_DIR = os.environ.get("STUDY_DIR", "")   # e.g. runs/study_demo from the command line
config = configs.load("study:demo")            # the packaged configs/study.py, arg 'demo'
if not STUDY_DIR:                              # tiny: 4 runs x 3 steps, a 2-block base model
    STUDY_DIR = tempfile.mkdtemp()
    config.family.base_factor = 1 / 64
    config.train.num_train_steps = 3
    config.train.global_batch_size = 8
    config.train.eval_batch_size = 1000
    config.train.log_every_steps = 1
    config.train.ema_decay = 0.0
    config.train.tensorboard = config.train.plot = False
    config.optim.warmup_epochs = 0.0
    config.study.executor.max_parallel = 2    # two runs at once: tiny runs are mostly compiling
print(config.family, config.study, sep="\n")  # the sweep (family) and its seeds / executor
for m in grid.expand(config):                  # the grid: one training run per member
    l = m.labels()
    print(f"{l['run']:>10}: {l['model']:<34} {l['resolution']:>3} px  {l['flops'] / 1e6:5.1f} MF  "
          f"{l['acts'] / 1e3:4.0f}k acts")'''),
    new_markdown_cell("""## Run (or resume) the study

Each run trains in its own process (`DIR/<strategy>_x<factor>_s<seed>/train.log`); a run that
crashes is recorded with its error and the study goes on. Calling it again skips finished runs."""),
    new_code_cell('''out = run_study(config, STUDY_DIR)'''),
    new_code_cell('''import csv
rows = list(csv.DictReader(open(os.path.join(STUDY_DIR, "study.csv"))))
for r in rows:
    print(f"{r['run']:>10}  {r['status']:>6}  top-1 {r['top1'] or '-':>6}  "
          f"{r['train_images_per_s'] or '-':>8} img/s  epoch {r['epoch_time_s'] or '-':>8} s")
again = run_study(config, STUDY_DIR)           # the rerun only collects: every run is finished'''),
    new_markdown_cell("""## The paper's plots

One line per strategy (mean over seeds, ±std bars, each seed a faint dot); runs that did not
finish are marked on the bottom edge."""),
    new_code_cell('''for png in out["plots"]:
    display(Image(filename=png, width=520))'''),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}, "colab": {"provenance": []}})
        for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only what changed
            cell.id = f"cell-{i:02d}"
        nbformat.write(nb, os.path.join(OUT, name))
        print("wrote", os.path.join(OUT, name))


if __name__ == "__main__":
    main()
