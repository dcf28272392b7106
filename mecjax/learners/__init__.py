"""Learners: jitted training of the learned schedulers (PureJaxRL style)."""

from mecjax.learners import (drl_fgso, drl_gat, fedavg, gat_mec,  # noqa: F401  (registration)
                             tsg_marl, twin)
