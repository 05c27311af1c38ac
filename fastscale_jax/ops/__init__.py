"""Low-level ops used by the models: the 2-D convolution dispatcher and BatchNorm (+ activation).

The fast CPU convolutions live in fastscale_jax.cpu, which registers them with ops.conv."""

from fastscale_jax.ops.conv import conv2d, ffi_convs_in, impls, resolve_impl

__all__ = ["conv2d", "ffi_convs_in", "impls", "resolve_impl"]
