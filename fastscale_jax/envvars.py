"""The environment variables that set defaults of a run's settings. They are read once, where a
config is built (fastscale_jax.config.base_config), never inside library code at run time: the
setting is then part of the config a run records."""

CONV_IMPL_ENV = "FASTSCALE_CONV_IMPL"         # model.conv_impl's default ('auto')
ONEDNN_LAYOUT_ENV = "FASTSCALE_ONEDNN_LAYOUT"  # model.onednn_layout's default ('nhwc')
