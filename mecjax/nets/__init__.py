"""Flax modules of the learned schedulers."""
