"""DRL-FGSO training (paper section 3, eqs. 1-9): a DQN per device, federated
averaging of the device models and Stackelberg pricing by the servers.

Followers (devices). Every device i is a DQN agent (eqs. 1-6):

* state s_i^t [F = 5 + 3M] (eq. 1, :func:`mecjax.env.features.device_features`):
  battery E_i, task D_i and C_i, CPU frequency and transmit power, the
  observed channel h_ij to every server (last slot's: CSI delay), the prices
  p_j^t the servers post for this slot (the leaders move first) and the
  servers' backlogs;
* action a_i^t in {0..M} (eq. 2: 0 = local, j = server j), epsilon-greedy
  (:func:`mecjax.learners.common.epsilon_greedy`) with ``epsilon`` = 0.1
  (Table 1) during training, greedy at execution;
  bandwidth and CPU shares are the convex optimum for the chosen assignment
  (:func:`mecjax.optim.allocation.allocate`);
* reward (eq. 3) ``R_i = -min(cost_i / cost_scale, reward_clip)``: minus the
  device's weighted cost alpha L + beta E + gamma payment, divided by
  ``cost_scale`` = 0.1 (about the mean all-local cost per device and slot at
  the Table 1 constants, 0.094 measured) so rewards are O(1), and clipped at
  ``reward_clip`` = 10 (a cost of 1, ten times a local task) so a rare
  catastrophic offload (a deep fade) cannot dominate the squared TD error;
* Q-network (:mod:`mecjax.nets.qnet`), target network theta^- and TD loss
  (eqs. 5-6): ``y = R + discount * max_a' Q(s', a'; theta^-)``, loss
  ``mean (y - Q(s, a; theta))^2``, Adam with learning rate 0.001 and
  discount 0.9 (Table 1), gradient norm clipped at ``max_grad_norm``; the
  target network is a copy of the online one refreshed every
  ``target_period`` updates (Mnih et al. 2015; ``optax.periodic_update``).
  The episode horizon is a time limit, not a terminal state, so the target
  always bootstraps (Pardo et al. 2018); ``s'`` is the state the step led to,
  before any auto-reset;
* replay: a ring buffer per device (:class:`mecjax.learners.common.ReplayBuffer`,
  vmapped over devices) of ``buffer_size`` transitions (s, a, R, s'), filled
  with that device's transitions from all ``n_envs`` training instances
  (n_envs per update); each gradient step samples ``batch_size`` transitions
  per device uniformly from its own buffer. The stored action is the one the
  device *chose*: if an empty battery forced it to offload, the cost of that
  forced offload is the consequence of choosing local, which is what
  Q(s, local) must learn.

Federation (eq. 7). The device models are one parameter pytree with a leading
[N] axis; each device trains its own model on its own buffer. Every
``fedavg_period`` updates the online parameters are replaced by their FedAvg
``sum_i n_i theta_i / sum_k n_k`` (:mod:`mecjax.learners.fedavg`) and
broadcast back. n_i is the number of transitions device i has collected
(``data_count``): every device collects one per training instance and
update, so all n_i are equal and eq. 7 is the plain mean here (the weights
are kept, so scenarios where devices collect unequal data need no change).
Adam states are not averaged: they stay local. Training starts from one
global model broadcast to all devices (Algorithm 1: "initialize DRL agents
and global model"). The policy a scheduler executes (:meth:`DRLFGSO.policy`)
is the FedAvg of the device models at the end of training.

Leaders (servers, eqs. 8-9 / 15). Each server adapts its price from observed
feedback with a perturb-and-observe rule that ascends its realised utility
U_j (eq. 15, ``info["leader_utility"]``): after the slot it compares U_j with
the previous slot's; if the last price move raised it, the server moves on in
the same direction, otherwise it turns back:

    d_j <- d_j if U_j^t > U_j^{t-1} else -d_j        (d_j in {-1, +1}, starts +1)
    p_j^{t+1} = clip(p_j^t + price_step d_j, price_min, price_max)

(a sign-gradient ascent on the finite difference of the last two slots'
prices and utilities; it settles into oscillating around a local maximum
with amplitude ``price_step``). Devices are followers: the posted prices are
part of their state, and their DQN learns the best response (eq. 9). Every
training instance starts at ``price_init`` with d = +1 at reset, as the
scheduler does on a fresh instance.

One update (PureJaxRL): one slot on each of the ``n_envs`` training instances
(:func:`mecjax.learners.common.step_envs`, auto-reset when ``done`` by
:func:`mecjax.env.reset_where`), the leader
price update, the transitions into the buffers, ``grad_steps`` gradient
steps of every device, then FedAvg and the target refresh when due. All of
it is in the train state (:class:`DRLTrainState`); ``update`` is pure.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mecjax.config import as_params
from mecjax.env import env
from mecjax.env.features import device_feature_dim, device_features
from mecjax.learners import fedavg
from mecjax.learners.base import Learner, register_learner
from mecjax.learners.common import (ReplayBuffer, check_hyper, clipped_adam, epsilon_greedy,
                                    reset_envs, step_envs)
from mecjax.nets import qnet


# --------------------------------------------------------------------------
# The leaders' price rule (eqs. 8-9, 15).
# --------------------------------------------------------------------------

@struct.dataclass
class LeaderState:
    """Per-server pricing state (shapes [M]; leading batch axes by vmap)."""

    prices: jax.Array         # [M] float32 price each server posts for the coming slot
    last_utility: jax.Array   # [M] float32 utility realised in the last slot (-inf at start)
    direction: jax.Array      # [M] float32 +1 / -1: the direction of the last price move


def leader_init(params) -> LeaderState:
    """Every server at ``price_init``, first move upwards."""
    p = as_params(params)
    m = p.n_servers
    return LeaderState(prices=jnp.full((m,), p.price_init, jnp.float32),
                       last_utility=jnp.full((m,), -jnp.inf, jnp.float32),
                       direction=jnp.ones((m,), jnp.float32))


def leader_update(leader: LeaderState, utility, price_step, params) -> LeaderState:
    """Perturb-and-observe ascent of each leader's realised utility ``utility`` [M]
    (eq. 15) at the prices it just posted: keep the direction of the last move
    if the utility rose, else reverse; step ``price_step``; stay within
    [price_min, price_max]."""
    p = as_params(params)
    utility = jnp.asarray(utility, jnp.float32)
    direction = jnp.where(utility > leader.last_utility, leader.direction, -leader.direction)
    prices = jnp.clip(leader.prices + price_step * direction, p.price_min, p.price_max)
    return LeaderState(prices=prices.astype(jnp.float32), last_utility=utility,
                       direction=direction.astype(jnp.float32))


# --------------------------------------------------------------------------
# Train state and policy.
# --------------------------------------------------------------------------

@struct.dataclass
class DeviceTransition:
    """One device's transition (s, a, R, s'): an item of its replay buffer."""

    state: jax.Array          # [F] float32 s
    action: jax.Array         # [] int32 a (the chosen action)
    reward: jax.Array         # [] float32 R (eq. 3, scaled and clipped)
    next_state: jax.Array     # [F] float32 s'


@struct.dataclass
class DRLTrainState:
    """Everything a DRL-FGSO run needs to continue bit-identically."""

    params: dict              # online Q-networks, leaves [N, ...]
    target_params: dict       # target Q-networks theta^-, leaves [N, ...]
    opt_state: tuple          # per-device Adam states, leaves [N, ...]
    buffer: ReplayBuffer      # one per device of DeviceTransition: leaves [N, C, ...], ptr [N]
    data_count: jax.Array     # [N] int32 n_i of eq. 7: transitions collected by device i
    env_state: env.EnvState   # the B training instances, leaves [B, ...]
    obs: env.Observation      # their current observations, leaves [B, ...]
    leader: LeaderState       # their servers' pricing states, leaves [B, M]
    key: jax.Array            # typed PRNG key
    step: jax.Array           # [] int32 updates done


@struct.dataclass
class DRLPolicy:
    """What the scheduler executes: the global (FedAvg) Q-network and the
    leaders' price step."""

    q: dict                   # Q-network parameters (no device axis)
    price_step: jax.Array     # [] float32


@register_learner
@dataclasses.dataclass(frozen=True)
class DRLFGSO(Learner):
    """DQN per device + FedAvg (eq. 7) + perturb-and-observe leader pricing.

    Hyper-parameters (saved in checkpoints): ``n_envs`` B training instances;
    ``hidden`` MLP widths; ``learning_rate`` (Adam), ``discount``, ``epsilon``
    (Table 1); ``buffer_size`` transitions per device (at least
    ``n_envs``); ``batch_size`` transitions per device per gradient step;
    ``grad_steps`` per update; ``target_period`` and ``fedavg_period`` in
    updates; ``cost_scale`` and ``reward_clip`` of the reward; ``max_grad_norm``;
    ``price_step`` of the leaders.
    """

    name = "drl_fgso"
    scheduler_name = "drl_fgso"

    n_envs: int = 16
    hidden: tuple = (64, 64)
    learning_rate: float = 1e-3
    discount: float = 0.9
    epsilon: float = 0.1
    buffer_size: int = 1024
    batch_size: int = 32
    grad_steps: int = 1
    target_period: int = 100
    fedavg_period: int = 10
    cost_scale: float = 0.1
    reward_clip: float = 10.0
    max_grad_norm: float = 10.0
    price_step: float = 0.05

    def __post_init__(self):
        check_hyper(self, counts=("n_envs", "buffer_size", "batch_size", "grad_steps",
                                  "target_period", "fedavg_period"),
                    widths=("hidden",), fractions=("epsilon", "discount"),
                    positive=("learning_rate", "cost_scale", "reward_clip", "max_grad_norm"),
                    non_negative=("price_step",))
        if self.buffer_size < self.n_envs:
            raise ValueError(f"drl_fgso: buffer_size={self.buffer_size} must be >= "
                             f"n_envs={self.n_envs} (one update adds n_envs transitions)")

    # -- pieces --------------------------------------------------------------
    def feature_dim(self, params) -> int:
        """Width F of a device state (eq. 1)."""
        return device_feature_dim(as_params(params).n_servers)

    def features(self, obs, prices, params) -> jax.Array:
        """[N, F] the device states the Q-networks see: eq. 1 at the posted
        ``prices`` [M]; subclasses concatenate more inputs."""
        return device_features(obs, params, prices)

    def optimizer(self) -> optax.GradientTransformation:
        return clipped_adam(self.learning_rate, self.max_grad_norm)

    def reward(self, cost):
        """Eq. 3, scaled and clipped: ``-min(cost / cost_scale, reward_clip)``."""
        return -jnp.minimum(cost / self.cost_scale, self.reward_clip)

    def td_loss(self, params, target_params, states, actions, rewards, next_states):
        """Eq. 6 for one device: mean over its K sampled transitions of
        ``(y - Q(s, a))^2`` with y of eq. 5 on the target network."""
        q = qnet.apply_q(params, states)                                       # [K, M+1]
        q_a = jnp.take_along_axis(q, actions[:, None], axis=-1)[:, 0]          # [K]
        q_next = jnp.max(qnet.apply_q(target_params, next_states), axis=-1)    # [K]
        y = jax.lax.stop_gradient(rewards + self.discount * q_next)
        return jnp.mean((y - q_a) ** 2), jnp.mean(q_a)

    # -- protocol ------------------------------------------------------------
    def init(self, key, params) -> DRLTrainState:
        """A fresh run: one global model broadcast to the N devices, their Adam
        states, empty buffers, B fresh training instances (one jitted call)."""
        return _init_jit(self, key, params)

    def _init(self, key, params) -> DRLTrainState:
        p = as_params(params)
        n, m, b = p.n_devices, p.n_servers, self.n_envs
        f = self.feature_dim(p)
        k_net, k_env, k_run = jax.random.split(key, 3)
        global_model = qnet.init_params(k_net, f, m + 1, self.hidden)
        net = fedavg.broadcast(global_model, n)
        opt_state = jax.vmap(self.optimizer().init)(net)
        obs, env_state = reset_envs(k_env, b, params)
        leader = jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), leader_init(p))
        item = DeviceTransition(state=jnp.zeros((f,), jnp.float32),
                                action=jnp.zeros((), jnp.int32),
                                reward=jnp.zeros((), jnp.float32),
                                next_state=jnp.zeros((f,), jnp.float32))
        buffer = jax.vmap(lambda _: ReplayBuffer.init(item, self.buffer_size))(jnp.arange(n))
        return DRLTrainState(params=net, target_params=net, opt_state=opt_state, buffer=buffer,
                             data_count=jnp.zeros((n,), jnp.int32), env_state=env_state,
                             obs=obs, leader=leader, key=k_run, step=jnp.zeros((), jnp.int32))

    def act(self, key, q_params, features):
        """Epsilon-greedy actions [B, N] of the device models ``q_params`` [N, ...]
        for states ``features`` [B, N, F] (eq. 2)."""
        q = qnet.apply_devices(q_params, jnp.swapaxes(features, 0, 1))         # [N, B, M+1]
        return epsilon_greedy(key, jnp.argmax(q, axis=-1).T, q.shape[-1], self.epsilon)

    def _learn(self, key, state: DRLTrainState, buffer: ReplayBuffer):
        """``grad_steps`` Adam steps of every device on minibatches of its own buffer."""
        n = buffer.ptr.shape[0]
        tx = self.optimizer()
        grad_fn = jax.vmap(jax.value_and_grad(self.td_loss, has_aux=True))
        sample = jax.vmap(lambda buf, k: buf.sample(k, self.batch_size))

        def one(carry, k):
            params, opt_state = carry
            batch = sample(buffer, jax.random.split(k, n))                      # leaves [N, K, ...]
            (loss, q_mean), grads = grad_fn(params, state.target_params, batch.state,
                                            batch.action, batch.reward, batch.next_state)
            updates, opt_state = jax.vmap(tx.update)(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, q_mean)

        (params, opt_state), (loss, q_mean) = jax.lax.scan(
            one, (state.params, state.opt_state), jax.random.split(key, self.grad_steps))
        return params, opt_state, jnp.mean(loss), jnp.mean(q_mean)

    def update(self, state: DRLTrainState, params):
        p = as_params(params)
        b = self.n_envs
        key, k_act, k_env, k_reset, k_learn = jax.random.split(state.key, 5)
        feats_of = jax.vmap(self.features, (0, 0, None))

        # 1. Followers act on the posted prices (epsilon-greedy, eqs. 1-2).
        prices = state.leader.prices                                            # [B, M]
        feats = feats_of(state.obs, prices, p)                                  # [B, N, F]
        actions = self.act(k_act, state.params, feats)                          # [B, N]
        _, next_obs, next_env, done, info = step_envs(k_env, state.env_state, state.obs,
                                                      actions, prices, p)
        rewards = self.reward(info["cost"])                                     # [B, N] eq. 3

        # 2. Leaders observe their utility (eq. 15) and re-price.
        leader = jax.vmap(leader_update, (0, 0, None, None))(
            state.leader, info["leader_utility"], self.price_step, p)
        next_feats = feats_of(next_obs, leader.prices, p)                       # [B, N, F]

        # 3. Every device stores its B transitions in its own ring buffer.
        per_device = DeviceTransition(state=feats, action=actions, reward=rewards,
                                      next_state=next_feats)                    # leaves [B, N, ...]
        buf = jax.vmap(ReplayBuffer.add)(state.buffer,
                                         jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), per_device))
        data_count = state.data_count + b

        # 4. Local DQN training (eqs. 5-6), FedAvg (eq. 7), target refresh.
        net, opt_state, loss, q_mean = self._learn(k_learn, state, buf)
        step = state.step + 1
        net = jax.lax.cond(step % self.fedavg_period == 0,
                           lambda x: fedavg.aggregate(x, data_count), lambda x: x, net)
        target = optax.periodic_update(net, state.target_params, step, self.target_period)

        # 5. Auto-reset finished instances (servers back to the initial price).
        next_obs, next_env = env.reset_where(k_reset, done, next_obs, next_env, p)
        leader = jax.tree.map(
            lambda f, o: jnp.where(done.reshape((b,) + (1,) * (o.ndim - 1)),
                                   jnp.broadcast_to(f, o.shape), o), leader_init(p), leader)

        new_state = DRLTrainState(params=net, target_params=target, opt_state=opt_state,
                                  buffer=buf, data_count=data_count, env_state=next_env,
                                  obs=next_obs, leader=leader, key=key, step=step)
        metrics = {
            "mean_cost": jnp.mean(info["cost"]),
            "loss": loss,
            "q_mean": q_mean,
            "reward": jnp.mean(rewards),
            "offload_fraction": jnp.mean((info["offload"] > 0).astype(jnp.float32)),
            "mean_price": jnp.mean(prices),
            "leader_utility": jnp.mean(info["leader_utility"]),
        }
        return new_state, metrics

    def policy(self, train_state: DRLTrainState) -> DRLPolicy:
        """The global model: FedAvg (eq. 7) of the device models, weighted by n_i."""
        return DRLPolicy(q=fedavg.average(train_state.params, train_state.data_count),
                         price_step=jnp.asarray(self.price_step, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _init_jit(learner: DRLFGSO, key, params) -> DRLTrainState:
    return learner._init(key, params)


__all__ = ["DRLFGSO", "DRLPolicy", "DRLTrainState", "DeviceTransition", "LeaderState",
           "leader_init", "leader_update"]
