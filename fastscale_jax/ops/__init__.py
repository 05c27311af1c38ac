"""Low-level ops used by the models: the 2-D convolution and its fast CPU formulations."""

from fastscale_jax.ops.conv import (IMPLS, conv2d, cpu_choice, default_impl, get_default_impl,
                                    resolve_impl, set_default_impl, shape_class)

__all__ = ["IMPLS", "conv2d", "cpu_choice", "default_impl", "get_default_impl", "resolve_impl",
           "set_default_impl", "shape_class"]
