"""Throughput benchmarks (env, optim, scale, schedulers, train), each against a NumPy
implementation of the same model in the same run where one exists; ``gpu.sh`` runs them
on a GPU."""
