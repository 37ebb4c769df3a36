"""CLCR model modules (Flax Linen)."""
