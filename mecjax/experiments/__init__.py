"""Experiments that write the tables and figures under ``results/``."""
