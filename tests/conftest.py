"""Test-suite setup: 8 fake CPU devices for the sharding and pmap tests.

XLA reads the flag once, when the CPU backend starts, so it must be set before anything imports
jax. pytest imports conftest.py before the test modules.
"""
import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
