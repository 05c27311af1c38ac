"""benchmarks/budget_replay.py: a recorded budget sweep replayed through the search at its
own settings times exactly the models the run timed (the replay is faithful), and a looser
tolerance times fewer."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import budget_replay  # noqa: E402

from fastscale_jax import configs  # noqa: E402

RUN = os.path.join(ROOT, "benchmarks", "budget_sweep_demo", "select.json")


def test_replay_at_the_runs_own_settings_times_what_it_timed():
    with open(RUN) as f:
        rec = json.load(f)
    timed = {m["name"] for r in rec["results"].values() for m in r["measurements"]}
    config = configs.load("budget_sweep:demo")
    own = budget_replay.replay(RUN, config, rec["request"]["tolerance"])
    assert own["models"] == len(timed) and own["targets"] == 21
    tight = budget_replay.replay(RUN, config, 0.02)
    assert tight["models"] > own["models"]
