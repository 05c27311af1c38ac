"""Write the notebooks under colabs/ from the cell sources below (no outputs stored).

    python tools/build_colabs.py            # rewrite colabs/*.ipynb

Notebooks only call the library; keep logic in fastscale_jax/, not here.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "colabs")

INSTALL = '''# Runtime: a CPU runtime is enough for the default (small) settings.
# Installs fastscale_jax when it is not importable: set FASTSCALE_JAX_SOURCE to a git URL or a
# local clone (e.g. "git+https://github.com/<you>/fastscale_jax" or "/content/fastscale_jax").
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("fastscale_jax") is None:
    src = os.environ.get("FASTSCALE_JAX_SOURCE", "fastscale-jax")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", src])'''

NOTEBOOKS = {}

NOTEBOOKS["01_scaling_explorer.ipynb"] = [
    new_markdown_cell("""# Scaling explorer

*Fast and Accurate Model Scaling* (Dollár, Singh, Girshick, CVPR 2021) in JAX: list the pycls
model zoo, count a model's complexity, scale it with d, w, r, dwr and dWr, and see how flops,
params and activations grow — the paper's Tables 1–3 made tangible. Flops are multiply-adds,
counted for one image at the model's train resolution, exactly as pycls counts them."""),
    new_code_cell(INSTALL),
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


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}, "colab": {"provenance": []}})
        nbformat.write(nb, os.path.join(OUT, name))
        print("wrote", os.path.join(OUT, name))


if __name__ == "__main__":
    main()
