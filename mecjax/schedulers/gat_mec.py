"""GAT-MEC scheduler: graph attention over the device/server graph, a
per-device head choosing local or a server (paper section 3.1, eqs. 10-14).

Execution of the policy trained by :mod:`mecjax.learners.gat_mec`: the GAT
(eqs. 11-12) embeds the instance's graph (eq. 10 node features), the
per-device head scores local and each server by its expected contribution to
the slot's system cost (eq. 13), and each device takes its lowest-scoring
option (greedy; no exploration at execution). Bandwidth and CPU
shares come from :func:`mecjax.optim.allocation.allocate`, whose shares sum
to 1 on every server, so the resource constraint of eq. 14 (CPU allocated
<= server capacity) holds by construction. Prices are fixed
(:func:`~mecjax.schedulers.base.fixed_prices`).

``make("gat_mec", checkpoint=run_dir)`` runs a trained policy, read when
built (refusing a checkpoint of another method, and at ``init`` one for
another N, M, with :class:`mecjax.checkpoint.CheckpointMismatchError`);
``checkpoint=""`` the untrained, randomly initialised one.
"""

from __future__ import annotations

import dataclasses

from mecjax.learners.gat_mec import greedy_actions
from mecjax.optim.allocation import allocate
from mecjax.schedulers.base import fixed_prices
from mecjax.schedulers.learned import LearnedScheduler


@dataclasses.dataclass(frozen=True)
class GATMEC(LearnedScheduler):
    """``sched_state`` is the policy: the GATMECNet parameters (a pytree)."""

    name = "gat_mec"

    def act(self, key, sched_state, obs, params):
        offload = greedy_actions(sched_state, obs, params)      # [N] in 0..M
        return allocate(obs, offload, fixed_prices(params), params), sched_state


__all__ = ["GATMEC"]
