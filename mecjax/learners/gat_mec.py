"""GAT-MEC learner: a graph-attention Q-head trained on exact counterfactual
slot costs (paper section 3.1, eqs. 10-14).

Network (:class:`mecjax.nets.gat.GATMECNet`): a 2-layer multi-head GAT
(eqs. 11-12) over the instance's graph
(:func:`mecjax.env.graph.graph_from_observation`, node features of eq. 10),
then a per-device head on [device embedding, the device's own features of
eq. 1 (:func:`mecjax.env.features.device_features`), graph globals] giving
one score per option
(local, server 1..M). Parameters are shared by all devices, so one network
serves any N; a trained checkpoint is still tied to its (N, M).

Decisions: each device takes its lowest-scoring option a_i in {0..M}; the
bandwidth and CPU shares of the devices on a server come from
:func:`mecjax.optim.allocation.allocate` (closed-form convex optimum, shares
sum to 1 per server), so the capacity constraint of eq. 14 (sum of CPU
allocated <= server capacity) holds by construction. Prices are fixed.

Objective (a DQN-style head, one-step): eq. 13 chooses the offloading that
minimises the *system* cost of the slot, sum_i (weighted latency + energy +
payment) with the eq. 3 weights. The head learns, for every device i and
option o, the change of that system cost when device i alone moves to o,
the others keeping their actions::

    delta_i(o) = sum_k cost_k(a_{-i}, a_i = o) - sum_k cost_k(a_{-i}, a_i = 0)   [B, N, M+1]

(the difference reward of Wolpert & Tumer 2002 for every option;
delta_i(0) = 0). After each step these targets are computed exactly, for all
options at once, from the slot's true channel and the executed shares and
rates (:func:`option_deltas`, closed form, O(N M^2); centralised training,
decentralised execution). The head regresses them (Huber loss) in units of
``cost_scale`` = 0.1, about the mean all-local cost per device, clipped to
+-``target_clip`` (the rare huge latencies of a vanishing channel). So
q_i(o) estimates E[delta_i(o) | observation] under the current policy of the
others, and argmin_o q_i(o) is each device's best contribution to eq. 13.
Because each device is credited with its effect on the *total* cost, the
devices play a potential game whose potential is the system cost: learning
aims at the cooperative optimum, not the selfish equilibrium (which on the
paper scenario costs more than all-local; see the ``greedy`` reference).

Discount: the targets are one-slot costs (eq. 13 is a per-slot argmin), so
there is no bootstrapping and Table 1's discount does not enter; the weak
couplings between slots (battery, server backlog) are reflected only through
the observed state. Exploration: epsilon-greedy with epsilon = 0.1 (Table 1)
per device during training (:func:`mecjax.learners.common.epsilon_greedy`),
greedy at execution. The executed policy is a Polyak average of the trained
parameters (rate ``polyak_rate``, ``optax.incremental_update``), which
smooths the slot-to-slot drift of the devices' joint best responses. Adam, lr
1e-3 (Table 1), with global-norm clipping. One update = one slot on each of
the B training instances plus one gradient step on the B x N x (M + 1)
targets; instances reset when ``done`` (:func:`mecjax.env.reset_where`).

Why not a policy gradient: an advantage actor-critic on the sampled actions
(same network, reward D_i = -delta_i(a_i)) was tried first. At N = 150 the
crowded early exploration made every offload look bad, the softmax policy
saturated on "local" within ~40 updates and, with no gradient left through
a saturated softmax, stayed all-local (exactly the all-local cost). The
regression on all options' exact targets has no such dead end.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mecjax.config import as_params
from mecjax.env import env as _env
from mecjax.env import physics
from mecjax.env.features import device_features
from mecjax.env.graph import graph_from_observation
from mecjax.env.types import Decision, EnvState, Observation
from mecjax.learners.base import Learner, register_learner
from mecjax.learners.common import (check_hyper, clipped_adam, epsilon_greedy, reset_envs,
                                    step_envs)
from mecjax.nets.gat import GATMECNet, gat_encoder
from mecjax.optim.allocation import optimal_bandwidth_shares, optimal_cpu_shares
from mecjax.optim.pricing import initial_prices as fixed_prices


@partial(jax.jit, static_argnums=0)
def _fresh_network_params(learner: "GATMECLearner", key, params):
    """:meth:`GATMECLearner.init_policy` under ``jit``."""
    obs, _ = _env.reset(jax.random.fold_in(key, 1), params)
    graph, dev = observation_features(obs, params)
    return learner.network(params).init(key, graph, dev)["params"]


def observation_features(obs: Observation, params):
    """``(graph, device_features [N, 5 + 3M])`` of one instance: the GAT's graph
    (eq. 10 node features) and the device states of eq. 1."""
    return graph_from_observation(obs, params), device_features(obs, params)


def apply_q(net_params, obs: Observation, params):
    """[N, M + 1] option scores of one instance (lower is better). The network's
    sizes are read from ``net_params``' shapes (:meth:`GATMECNet.from_params`)."""
    net = GATMECNet.from_params(net_params)
    graph, dev = observation_features(obs, params)
    return net.apply({"params": net_params}, graph, dev)


def device_embeddings(net_params, obs: Observation, params):
    """[N, embed] every device's GAT embedding (eqs. 11-12) from a GAT-MEC
    network's encoder: what the unified scheduler feeds its DRL agents."""
    encoder = gat_encoder(GATMECNet.from_params(net_params))
    h = encoder.apply({"params": net_params["gat"]}, graph_from_observation(obs, params))
    return h[:as_params(params).n_devices]


def greedy_actions(net_params, obs: Observation, params):
    """[N] int32: each device's lowest-scoring option (the execution policy)."""
    return jnp.argmin(apply_q(net_params, obs, params), axis=-1).astype(jnp.int32)


def option_deltas(state: EnvState, obs: Observation, decision: Decision, offload, rate, params):
    """[N, M + 1] delta_i(o): the change of the slot's total cost sum_k cost_k
    (eq. 13) when device i alone moves from local to option o, the others
    keeping the executed actions; column 0 is 0. Exact, in closed form.

    Arguments are one instance's: ``state`` the slot's state (true channel),
    ``obs`` its observation, ``decision`` the decision given to the
    environment (made by :func:`~mecjax.optim.allocation.allocate` on
    ``obs``), and ``offload`` and ``rate`` the executed actions and uplink
    rates of the step (``info``), [N].

    Why it is cheap: ``allocate`` gives each device on server j a bandwidth
    share proportional to a weight w_ij (fixed by its own task and observed
    channel) and a CPU share proportional to sqrt(C_i). When device i leaves
    server j the others' shares grow by 1 / (1 - b_i), 1 / (1 - c_i), so their
    transmission costs tx_k = (alpha + beta P_k) D_k / r_k shrink by (1 - b_i)
    and their edge-compute latencies cp_k = alpha C_k / (c_k F) by (1 - c_i);
    when it joins server j holding weight sums S, Q, it gets b = w / (S + w),
    c = sqrt(C_i) / (Q + sqrt(C_i)) and the others' tx and cp grow by w / S
    and sqrt(C_i) / Q. Waits and payments of the others do not change. The
    weights are read from the allocation functions themselves (shares with
    every device on server j). Exact while no other device's rate is at its
    1 bit/s floor. A device whose battery cannot pay for local execution is
    forced to its best observed server; its column 0 is that server's.
    """
    p = as_params(params)
    n, m = p.n_devices, p.n_servers
    servers = jnp.arange(1, m + 1, dtype=jnp.int32)
    onehot = physics.server_onehot(offload, m)                                    # [N, M]
    offl = offload > 0
    # allocation weights: bandwidth w_ij [N, M], CPU sqrt(C_i) up to scale [N]
    w_bw = jax.vmap(lambda j: optimal_bandwidth_shares(obs, jnp.full((n,), j, jnp.int32), p),
                    out_axes=1)(servers)
    w_cpu = optimal_cpu_shares(obs, jnp.ones((n,), jnp.int32), p)
    bw = jnp.where(offl, decision.bandwidth_share, 0.0)
    cpu = jnp.where(offl, decision.cpu_share, 0.0)
    tx = jnp.where(offl, (p.alpha + p.beta * state.tx_power) * state.task_bits
                   / jnp.maximum(rate, physics.MIN_RATE_BPS), 0.0)
    cp = jnp.where(offl, p.alpha * physics.edge_compute_time(
        state.task_cycles, jnp.where(offl, cpu, 1.0), physics.of_server(offload, p.server_cpu_hz)),
        0.0)
    # per-server sums over the executed assignment [M]
    count = jnp.sum(onehot, 0)
    s_bw = jnp.sum(jnp.where(onehot, w_bw, 0.0), 0)
    s_cpu = physics.per_server_sum(offload, w_cpu, m)
    s_tx = physics.per_server_sum(offload, tx, m)
    s_cp = physics.per_server_sum(offload, cp, m)
    # the same sums without device i [N, M] (they differ only on i's own server)
    n_wo = count[None, :] - onehot
    s_bw_wo = jnp.where(onehot, s_bw[None, :] - w_bw, s_bw[None, :])
    s_cpu_wo = jnp.where(onehot, s_cpu[None, :] - w_cpu[:, None], s_cpu[None, :])
    s_tx_wo = jnp.where(onehot, (s_tx[None, :] - tx[:, None]) * (1.0 - bw[:, None]), s_tx[None, :])
    s_cp_wo = jnp.where(onehot, (s_cp[None, :] - cp[:, None]) * (1.0 - cpu[:, None]), s_cp[None, :])
    others = n_wo > 0
    s_bw_wo = jnp.where(others, s_bw_wo, 0.0)
    s_cpu_wo = jnp.where(others, s_cpu_wo, 0.0)
    # device i joining server j
    b_new = jnp.where(others, w_bw / (s_bw_wo + w_bw), 1.0)
    c_new = jnp.where(others, w_cpu[:, None] / (s_cpu_wo + w_cpu[:, None]), 1.0)
    extra = jnp.where(others, s_tx_wo * w_bw / jnp.where(others, s_bw_wo, 1.0)
                      + s_cp_wo * w_cpu[:, None] / jnp.where(others, s_cpu_wo, 1.0), 0.0)
    col = lambda x: x[:, None]  # noqa: E731
    rate_new = physics.uplink_rate(b_new, p.bandwidth_hz, col(state.tx_power), state.gain,
                                   p.noise_w)
    latency = (physics.transmission_time(col(state.task_bits), rate_new)
               + physics.queue_wait(state.backlog, p.server_cpu_hz)[None, :]
               + physics.edge_compute_time(col(state.task_cycles), c_new, p.server_cpu_hz))
    wan = _env.wan_delays(p)
    if wan is not None:
        latency = latency + wan[None, :]
    energy = physics.transmission_energy(col(state.tx_power), col(state.task_bits), rate_new)
    pay = physics.payment(decision.prices[None, :], col(state.task_cycles))
    own = physics.weighted_cost(latency, energy, pay, p.alpha, p.beta, p.gamma)    # [N, M]
    local_energy = physics.local_energy(state.task_cycles, state.cpu_freq, p.kappa)
    local = physics.weighted_cost(_env.local_latency(state.task_cycles, state.cpu_freq,
                                                     state.device_backlog, p),
                                  local_energy, 0.0, p.alpha, p.beta, p.gamma)
    to_server = own + extra - local[:, None]                                        # [N, M]
    # no local alternative: "local" executes on the best observed server
    forced = state.battery < local_energy
    best = jnp.argmax(obs.gain_observed, axis=-1)
    forced_col = jnp.take_along_axis(to_server, best[:, None], 1)[:, 0]
    col0 = jnp.where(forced, forced_col, 0.0)
    return jnp.concatenate([col0[:, None], to_server], -1)


@struct.dataclass
class GATMECTrainState:
    """Everything a GAT-MEC run needs to continue bit-identically (arrays only)."""

    params: Any            # GATMECNet parameters (online, trained)
    policy_params: Any     # their Polyak average: the policy that is executed
    opt_state: Any         # optax state of (clip_by_global_norm, adam)
    env_state: EnvState    # [B] training instances
    obs: Observation       # [B] their current observations
    key: jax.Array         # typed PRNG key (jax.random.key)
    step: jax.Array        # [] int32 updates done


@register_learner
@dataclasses.dataclass(frozen=True)
class GATMECLearner(Learner):
    """GAT-MEC training (see the module docstring).

    Hyper-parameters (JSON-friendly, saved in checkpoints): ``n_envs`` B
    parallel training instances; GAT sizes ``gat_hidden`` (features per head
    of each hidden layer), ``heads``, ``embed`` (output features, heads
    averaged), ``embed_heads``; ``head_hidden`` widths of the per-device head;
    ``learning_rate`` and ``epsilon`` (exploration; both Table 1),
    ``max_grad_norm``; ``cost_scale`` (target unit), ``target_clip``,
    ``huber_delta``; ``polyak_rate``: rate of the running (Polyak) average of
    the parameters that :meth:`policy` returns (1 = the online parameters).
    """

    name = "gat_mec"
    scheduler_name = "gat_mec"

    n_envs: int = 4
    gat_hidden: tuple = (8,)
    heads: int = 4
    embed: int = 16
    embed_heads: int = 4
    head_hidden: tuple = (64, 64)
    learning_rate: float = 1e-3
    epsilon: float = 0.1
    max_grad_norm: float = 1.0
    cost_scale: float = 0.1
    target_clip: float = 10.0
    huber_delta: float = 1.0
    polyak_rate: float = 0.01

    def __post_init__(self):
        check_hyper(self, counts=("n_envs", "heads", "embed", "embed_heads"),
                    widths=("gat_hidden", "head_hidden"), fractions=("epsilon",),
                    rates=("polyak_rate",),
                    positive=("learning_rate", "max_grad_norm", "cost_scale", "target_clip",
                              "huber_delta"))

    # -- pieces -------------------------------------------------------------
    def network(self, params) -> GATMECNet:
        return GATMECNet(n_servers=as_params(params).n_servers, gat_hidden=self.gat_hidden,
                         heads=self.heads, embed=self.embed, embed_heads=self.embed_heads,
                         head_hidden=self.head_hidden)

    def optimizer(self) -> optax.GradientTransformation:
        return clipped_adam(self.learning_rate, self.max_grad_norm)

    def init_policy(self, key, params):
        """Fresh network parameters (the untrained policy), computed as one compiled
        program: run eagerly, flax's initialisation of the GAT dispatched (and compiled)
        each of its operations on its own, about 8 s on a 2-core CPU against 2-3 s; the
        same parameters."""
        return _fresh_network_params(self, key, params)

    # -- protocol -----------------------------------------------------------
    def init(self, key, params) -> GATMECTrainState:
        k_net, k_env, k_state = jax.random.split(key, 3)
        obs, state = reset_envs(k_env, self.n_envs, params)
        net_params = self.init_policy(k_net, params)
        return GATMECTrainState(params=net_params, policy_params=net_params,
                                opt_state=self.optimizer().init(net_params),
                                env_state=state, obs=obs, key=k_state,
                                step=jnp.zeros((), jnp.int32))

    def policy(self, train_state: GATMECTrainState):
        return train_state.policy_params

    def update(self, ts: GATMECTrainState, params):
        p = as_params(params)
        b, m = self.n_envs, p.n_servers
        key, k_explore, k_env, k_reset = jax.random.split(ts.key, 4)
        prices = jnp.broadcast_to(fixed_prices(p), (b, m))

        def loss_fn(net_params):
            q = jax.vmap(apply_q, (None, 0, None))(net_params, ts.obs, p)            # [B, N, M+1]
            greedy = jnp.argmin(jax.lax.stop_gradient(q), -1)
            actions = epsilon_greedy(k_explore, greedy, m + 1, self.epsilon)         # [B, N]
            decisions, next_obs, next_state, done, info = step_envs(
                k_env, ts.env_state, ts.obs, actions, prices, p)
            delta = jax.vmap(option_deltas, (0, 0, 0, 0, 0, None))(
                ts.env_state, ts.obs, decisions, info["offload"], info["rate"], p)
            target = jax.lax.stop_gradient(
                jnp.clip(delta / self.cost_scale, -self.target_clip, self.target_clip))
            loss = jnp.mean(optax.losses.huber_loss(q, target, delta=self.huber_delta))
            aux = dict(next_obs=next_obs, next_state=next_state, done=done, info=info,
                       target=target, greedy=greedy)
            return loss, aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params)
        updates, opt_state = self.optimizer().update(grads, ts.opt_state, ts.params)
        net_params = optax.apply_updates(ts.params, updates)

        done, next_obs, next_state = aux["done"], aux["next_obs"], aux["next_state"]
        obs, env_state = _env.reset_where(k_reset, done, next_obs, next_state, p)

        new_ts = GATMECTrainState(
            params=net_params,
            policy_params=optax.incremental_update(net_params, ts.policy_params,
                                                   self.polyak_rate),
            opt_state=opt_state,
            env_state=env_state,
            obs=obs,
            key=key, step=ts.step + 1)
        info, target = aux["info"], aux["target"]
        best = jnp.argmin(target, -1)
        metrics = {
            "mean_cost": jnp.mean(info["cost"]),
            "loss": loss,
            "offload_fraction": jnp.mean(info["offload_fraction"]),
            "utility": jnp.mean(info["utility"]),
            # how often the greedy choice was the best single-device move in hindsight
            "greedy_is_best": jnp.mean((aux["greedy"] == best).astype(jnp.float32)),
        }
        return new_ts, metrics


__all__ = ["GATMECLearner", "GATMECTrainState", "apply_q", "fixed_prices", "greedy_actions",
           "observation_features", "option_deltas"]
