"""Subprocess body for tests/test_train_parallel.py (needs XLA_FLAGS set before jax starts).

    python tests/_train_parallel_worker.py equal OUT.json     # pmap vs shard_map, 8 devices
    python tests/_train_parallel_worker.py multihost PORT PID WORKDIR
    python tests/_train_parallel_worker.py multihost_term PORT PID WORKDIR   # SIGTERM to pid 1
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def tiny_config(parallel, steps=3, batch=16):
    from fastscale_jax.config import base_config

    c = base_config()
    c.parallel = parallel
    c.train.global_batch_size = batch
    c.train.num_train_steps = steps
    c.train.log_every_steps = 1
    c.train.eval_every_epochs = 0.0
    c.train.progress = c.train.tensorboard = c.train.plot = False
    c.train.ema_decay = 0.9
    c.train.mixup_alpha = 0.2
    c.train.cutmix_alpha = 1.0
    c.optim.name = "lamb"
    c.optim.base_lr = 0.05
    c.checkpoint.every_steps = 100
    c.checkpoint.async_save = False
    return c


def equal(out_path):
    import jax
    import numpy as np

    from fastscale_jax.train import checkpoint as ckpt_lib
    from fastscale_jax.train import loop
    from synthetic_data import SyntheticData
    from test_train_loop import SPEC

    assert jax.device_count() == 8, jax.devices()
    tmp = os.path.dirname(out_path)
    results = {}
    params = {}
    for mode in ("pmap", "shard_map", "pmap_sync_bn", "shard_map_sync_bn"):
        wd = os.path.join(tmp, mode)
        c = tiny_config(mode.replace("_sync_bn", ""))
        c.train.sync_bn = mode.endswith("sync_bn")  # BN statistics over the global batch
        res = loop.train_and_evaluate(c, wd, data=SyntheticData(num_eval=21), spec=SPEC)
        results[mode] = {k: v for k, v in res.items()}
        meta = ckpt_lib.Checkpointer(wd).read_meta()
        assert meta["parallel"] == c.parallel
        # the saved params, read back as flat numpy arrays
        ck = ckpt_lib.Checkpointer(wd)
        import orbax.checkpoint as ocp

        tree = ck.manager.restore(ck.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]
        params[mode] = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
        ck.close()
    def max_diff(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(params[a], params[b]))
    # a global batch that does not split over 8 devices: a clear error
    try:
        loop.train_and_evaluate(tiny_config("pmap", batch=12), os.path.join(tmp, "bad"),
                                data=SyntheticData(), spec=SPEC)
        bad = None
    except ValueError as e:
        bad = str(e)
    with open(out_path, "w") as f:
        json.dump({"results": results, "max_param_diff": max_diff("pmap", "shard_map"),
                   "max_param_diff_sync_bn": max_diff("pmap_sync_bn", "shard_map_sync_bn"),
                   "sync_vs_local_param_diff": max_diff("pmap", "pmap_sync_bn"),
                   "bad_batch_error": bad}, f)


def multihost_term(port, pid, workdir):
    """Process 1 alone gets SIGTERM (while serving its batch 1); both must stop and save at
    the same step."""
    from fastscale_jax.train import loop
    from synthetic_data import SyntheticData
    from test_train_loop import SPEC, SigtermData

    c = tiny_config("pmap", steps=40)
    c.distributed.coordinator_address = f"localhost:{port}"
    c.distributed.num_processes = 2
    c.distributed.process_id = int(pid)
    data = SigtermData(1, num_eval=21) if int(pid) == 1 else SyntheticData(num_eval=21)
    res = loop.train_and_evaluate(c, workdir, data=data, spec=SPEC)
    print("RESULT " + json.dumps({"pid": int(pid), "step": res["step"],
                                  "interrupted": bool(res.get("interrupted")),
                                  "losses": res["losses"]}), flush=True)


def multihost(port, pid, workdir):
    from fastscale_jax.train import loop
    from synthetic_data import SyntheticData
    from test_train_loop import SPEC

    c = tiny_config("pmap", steps=4)
    c.distributed.coordinator_address = f"localhost:{port}"
    c.distributed.num_processes = 2
    c.distributed.process_id = int(pid)
    c.checkpoint.every_steps = 2
    res = loop.train_and_evaluate(c, workdir, data=SyntheticData(num_eval=21), spec=SPEC)
    import jax

    print("RESULT " + json.dumps({"pid": int(pid), "process_count": jax.process_count(),
                                  "devices": jax.device_count(), "losses": res["losses"],
                                  "top1": res["top1"], "count": res["count"]}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "equal":
        equal(sys.argv[2])
    elif sys.argv[1] == "multihost_term":
        multihost_term(*sys.argv[2:5])
    else:
        multihost(*sys.argv[2:5])
