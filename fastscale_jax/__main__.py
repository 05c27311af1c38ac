"""`python -m fastscale_jax`: the command line (fastscale_jax/cli.py), as `fastscale`."""

from fastscale_jax.cli import run

run()
