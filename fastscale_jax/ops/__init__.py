"""Low-level ops used by the models: the 2-D convolution dispatcher and BatchNorm (+ activation).

The fast CPU convolutions live in fastscale_jax.cpu, which registers them with ops.conv."""

from fastscale_jax.ops.conv import (conv2d, default_impl, ffi_convs_in, get_default_impl, impls,
                                    resolve_impl, set_default_impl)

__all__ = ["conv2d", "default_impl", "ffi_convs_in", "get_default_impl", "impls", "resolve_impl",
           "set_default_impl"]
