"""Optimizers: convex allocation, pricing, game dynamics, QIO, PSO and the exact optimum.

Everything here is pure and batched by ``vmap``; the optimizers that search
follow evosax's ``init`` / ``ask`` / ``tell`` shape.
"""
