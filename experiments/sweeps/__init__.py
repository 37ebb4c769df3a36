"""Sweep files: `get_sweep(arg)` per file, expanded and run by `python -m experiments.sweep`."""
