"""Pytrees of the environment: state, observation, decision, outcome.

Shapes: N devices, M servers. Leading batch axes are added by ``vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

Array = jax.Array


@struct.dataclass
class EnvState:
    """The full physical state of one MEC instance at the start of slot ``t``.

    The task fields describe the task each device holds *now*; ``gain`` is the
    true channel of this slot (revealed to schedulers only one slot later, as
    ``gain_observed`` of the next state).
    """

    t: Array                  # [] int32 slot index
    positions: Array          # [N, 2] device positions (m)
    server_positions: Array   # [M, 2] server positions (m)
    task_bits: Array          # [N] D_i (bits)
    task_cycles: Array        # [N] C_i (cycles)
    cpu_freq: Array           # [N] f_i (Hz)
    tx_power: Array           # [N] P_i (W)
    path_gain: Array          # [N, M] large-scale gain (linear), from distance
    fading_re: Array          # [N, M] Gauss-Markov Rayleigh fading g_ij, real part
    fading_im: Array          # [N, M] imaginary part
    gain: Array               # [N, M] h_ij = path_gain * |g_ij|^2 of slot t
    gain_observed: Array      # [N, M] h_ij of slot t-1 (CSI delay)
    battery: Array            # [N] J
    backlog: Array            # [M] cycles waiting at each server
    prices: Array             # [M] prices posted last slot (per Gcycle)
    load_phase: Array         # [N] phase of each device's periodic load
    burst: Array              # [N] bursty AR(1) load component
    task_deadline: Array      # [N] s, deadline of the task each device holds now
    device_backlog: Array     # [N] cycles queued at each device (0 unless Scenario.device_queue)


@struct.dataclass
class Observation:
    """What a causal scheduler may see at slot ``t`` (no true channel)."""

    t: Array                  # [] int32
    positions: Array          # [N, 2]
    server_positions: Array   # [M, 2]
    task_bits: Array          # [N]
    task_cycles: Array        # [N]
    cpu_freq: Array           # [N]
    tx_power: Array           # [N]
    gain_observed: Array      # [N, M] last slot's channel
    battery: Array            # [N]
    backlog: Array            # [M]
    prices: Array             # [M] last slot's prices
    task_deadline: Array      # [N] s
    device_backlog: Array     # [N] cycles (0 unless Scenario.device_queue)


@struct.dataclass
class Decision:
    """One slot's scheduling decision.

    offload: [N] int in 0..M (0 = local, j = server j).
    prices: [M] price per Gcycle posted by each server (>= 0, within the
        scenario's range).
    bandwidth_share: optional [N] fraction of its server's bandwidth each
        offloading device gets; per server the shares sum to at most 1.
        ``None`` means equal shares among the devices on that server.
    cpu_share: optional [N] fraction of its server's CPU; same rules.
    """

    offload: Array
    prices: Array
    bandwidth_share: Any = None
    cpu_share: Any = None


@struct.dataclass
class Outcome:
    """Per-device result of a decision in a given state (``evaluate``)."""

    latency: Array            # [N] s
    energy: Array             # [N] J, device side
    payment: Array            # [N] price units
    cost: Array               # [N] alpha L + beta E + gamma payment (eq. 3 / 16)
    rate: Array               # [N] bit/s uplink; 0 for local and failed tasks
    offload: Array            # [N] the action actually executed (after battery forcing)
    failed: Array             # [N] bool: the battery could not pay the executed option
                              # (Scenario.battery_hard; always False otherwise)
