"""clcr_jax: a JAX/Flax implementation of CLCR (Cross-Level Co-Representation, CVPR 2026)."""

__version__ = "0.1.0"
