"""Learners: jitted training of the learned schedulers (PureJaxRL style)."""

from mecjax.learners import drl_fgso, fedavg, gat_mec, tsg_marl, twin  # noqa: F401  (registration)
