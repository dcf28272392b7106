"""Learners: jitted training of the learned schedulers (PureJaxRL style)."""

from mecjax.learners import drl_fgso, fedavg, tsg_marl  # noqa: F401  (registration)
