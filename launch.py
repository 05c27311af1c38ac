"""fastscale_jax command line (the design card's entry point in a clone): the same command as
the installed `fastscale` and `python -m fastscale_jax` (fastscale_jax/cli.py).

    python launch.py --config configs/regnetz_dWr.py:demo --workdir runs/demo
    python launch.py --config regnety:800MF --mode complexity      # a packaged config by name
    python launch.py --config configs/alpha_sweep.py --mode benchmark --workdir runs/sweep \
        --config.timing.batch_size=8 --config.model.resolution=64

Modes: train (default; resumes from --workdir), eval, complexity, benchmark, study, select,
config. `python launch.py --helpshort` lists the flags; see fastscale_jax/cli.py.
"""

from fastscale_jax.cli import run

if __name__ == "__main__":
    run()
