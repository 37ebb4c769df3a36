"""A PyTorch reference implementation of CLCR with clcr_jax's exact architecture and sizes.

Written as a PyTorch researcher would (eager nn.Modules; `torch.compile` optional), for speed
comparisons against clcr_jax (benchmarks/run.py) and a forward-equivalence check
(benchmarks/check_torch_equivalence.py, with parameters copied from JAX by `convert`).
"""
from benchmarks.torch_reference.convert import load_flax_variables
from benchmarks.torch_reference.losses import make_optimizer, total_loss
from benchmarks.torch_reference.model import CLCR

__all__ = ["CLCR", "load_flax_variables", "make_optimizer", "total_loss"]
