"""Helpers of benchmarks/accelerator_check.py, one module per check group.

    common    check results, plans' small-model helpers, parallel ahead-of-time compilation
    models    environment, per-family forward/backward, CPU parity, alpha-family timing
    torch_side  train-step images/s of ours vs timm (AMP, channels-last)
    training  a short training run on the embedded CIFAR-10 demo set; pmap vs shard_map

Nothing here imports tensorflow, tensorflow_datasets or ml_collections (the GPU image has
none of them).
"""
