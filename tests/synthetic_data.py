"""Test support: a tiny learnable synthetic dataset with the input pipeline's API (no TF).

Each image is a fixed random colour and pattern of its class plus per-image noise; the stream is a pure
function of (seed, position), so tests of resume / parallel equivalence are exact.

    data = SyntheticData(num_classes=4, num_train=64, num_eval=20, image_size=16)
    train_and_evaluate(config, workdir, data=data)
"""

from __future__ import annotations

import numpy as np


class SyntheticData:
    def __init__(self, num_classes=4, num_train=64, num_eval=20, image_size=16, noise=0.5):
        self.num_classes, self.num_train, self.num_eval = num_classes, num_train, num_eval
        self.image_size, self.noise = image_size, noise

    def dataset_info(self, data_cfg=None) -> dict:
        return {"num_classes": self.num_classes, "num_train": self.num_train,
                "num_eval": self.num_eval, "image_size_native": self.image_size}

    def _examples(self, idx, size, split):
        rng = np.random.default_rng(1234)
        # a per-class colour (visible after global pooling) plus a per-class pattern
        colours = rng.normal(size=(self.num_classes, 1, 1, 3))
        templates = (colours + 0.5 * rng.normal(size=(self.num_classes, size, size, 3))
                     ).astype(np.float32)
        labels = (idx % self.num_classes).astype(np.int32)
        noise = np.stack([np.random.default_rng([int(i), split]).normal(
            size=(size, size, 3)) for i in idx]).astype(np.float32)
        return templates[labels] + self.noise * noise, labels

    @staticmethod
    def _layout(global_batch_size, process_index, process_count, local_device_count):
        import jax

        pi = jax.process_index() if process_index is None else process_index
        pc = jax.process_count() if process_count is None else process_count
        d = jax.local_device_count() if local_device_count is None else local_device_count
        if global_batch_size % (pc * d):
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                             f"{pc * d} devices")
        return pi, pc, d, global_batch_size // (pc * d)

    def train_iterator(self, data_cfg=None, *, global_batch_size, image_size, seed=0,
                       process_index=None, process_count=None, local_device_count=None,
                       skip_batches=0):
        pi, pc, d, b = self._layout(global_batch_size, process_index, process_count,
                                    local_device_count)
        seed = 0 if seed is None else int(seed)
        pos = int(skip_batches) * global_batch_size
        while True:
            epoch, off = divmod(pos, self.num_train)
            order = np.random.default_rng([seed, epoch]).permutation(self.num_train)
            order = np.concatenate([order, np.random.default_rng([seed, epoch + 1])
                                    .permutation(self.num_train)])
            idx = order[off:off + global_batch_size]
            pos += global_batch_size
            local = idx[pi * d * b:(pi + 1) * d * b]
            x, y = self._examples(local, image_size, 0)
            yield {"image": x.reshape(d, b, *x.shape[1:]), "label": y.reshape(d, b)}

    def eval_iterator(self, data_cfg=None, *, global_batch_size, image_size,
                      process_index=None, process_count=None, local_device_count=None):
        pi, pc, d, b = self._layout(global_batch_size, process_index, process_count,
                                    local_device_count)
        n_batches = -(-self.num_eval // global_batch_size)
        for k in range(n_batches):
            idx = np.arange(k * global_batch_size, (k + 1) * global_batch_size)
            local = idx[pi * d * b:(pi + 1) * d * b]
            mask = local < self.num_eval
            x, y = self._examples(np.where(mask, local, 0), image_size, 1)
            yield {"image": x.reshape(d, b, *x.shape[1:]), "label": y.reshape(d, b),
                   "mask": mask.reshape(d, b)}
