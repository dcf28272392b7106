"""DRL-FGSO training (paper section 3, eqs. 1-9; DESIGN.md section 4): a DQN
per device, federated averaging of the device models and Stackelberg pricing
by the servers.

Followers (devices). Every device i is a DQN agent (eqs. 1-6):

* state s_i^t [F = 5 + 3M] (eq. 1, :func:`device_features`): battery E_i,
  task D_i and C_i, CPU frequency and transmit power, the observed channel
  h_ij to every server (last slot's: CSI delay), the prices p_j^t the servers
  post for this slot (the leaders move first) and the servers' backlogs;
* action a_i^t in {0..M} (eq. 2: 0 = local, j = server j), epsilon-greedy
  with ``epsilon`` = 0.1 (Table 1) during training, greedy at execution;
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
  ``target_period`` updates (Mnih et al. 2015). The episode horizon is a time
  limit, not a terminal state, so the target always bootstraps (Pardo et al.
  2018); ``s'`` is the state the step led to, before any auto-reset;
* replay: a circular buffer per device of ``buffer_size`` transitions
  (s, a, R, s'), filled with that device's transitions from all ``n_envs``
  training instances (n_envs per update); each gradient step samples
  ``batch_size`` transitions per device uniformly from its own buffer. The
  stored action is the one the device *chose*: if an empty battery forced it
  to offload, the cost of that forced offload is the consequence of choosing
  local, which is what Q(s, local) must learn.

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
(``vmap`` of :func:`mecjax.env.step`, auto-reset when ``done``), the leader
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
from mecjax.env.graph import scaled_gain_db
from mecjax.learners import fedavg
from mecjax.learners.base import Learner, register_learner
from mecjax.nets import qnet
from mecjax.optim.allocation import allocate


# --------------------------------------------------------------------------
# The device state (eq. 1).
# --------------------------------------------------------------------------

def feature_dim(n_servers: int) -> int:
    """F = 5 + 3M: the width of a device state (eq. 1)."""
    return 5 + 3 * n_servers


def device_features(obs, prices, params) -> jax.Array:
    """[N, 5 + 3M] the state s_i of every device (eq. 1), scaled to about [0, 1].

    The columns of :func:`mecjax.env.device_view` (battery / capacity,
    D / D_max, C / C_max, f / f_max, P / P_max, observed channel to each
    server in dB scaled by ``(10 log10 h + 110) / 30``, price / p_max and
    backlog in slots of server work), except that the price columns hold
    ``prices`` [M], the prices the leaders post for *this* slot (Stackelberg:
    the leader moves first, the followers respond to its price), and the
    channel is floored at 1e-20 so the features are always finite.
    """
    p = as_params(params)
    n = p.n_devices
    own = jnp.stack([obs.battery / p.battery_capacity_j, obs.task_bits / p.task_bits_max,
                     obs.task_cycles / p.task_cycles_max, obs.cpu_freq / p.device_cpu_max_hz,
                     obs.tx_power / p.tx_power_max_w], -1)
    shared = jnp.concatenate([prices / p.price_max,
                              obs.backlog / (p.server_cpu_hz * p.slot_s)])
    return jnp.concatenate([own, scaled_gain_db(obs.gain_observed),
                            jnp.broadcast_to(shared, (n, shared.shape[0]))],
                           -1).astype(jnp.float32)


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
class ReplayBuffer:
    """Circular per-device replay memory: C = ``buffer_size`` slots per device."""

    states: jax.Array         # [N, C, F] float32 s
    actions: jax.Array        # [N, C] int32 a (the chosen action)
    rewards: jax.Array        # [N, C] float32 R (eq. 3, scaled and clipped)
    next_states: jax.Array    # [N, C, F] float32 s'
    ptr: jax.Array            # [] int32 next write position (the same for every device)
    size: jax.Array           # [] int32 filled entries per device


@struct.dataclass
class DRLTrainState:
    """Everything a DRL-FGSO run needs to continue bit-identically."""

    params: dict              # online Q-networks, leaves [N, ...]
    target_params: dict       # target Q-networks theta^-, leaves [N, ...]
    opt_state: tuple          # per-device Adam states, leaves [N, ...]
    buffer: ReplayBuffer
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


def _tuple_of_ints(x) -> tuple[int, ...]:
    return tuple(int(v) for v in x)


@register_learner
@dataclasses.dataclass(frozen=True)
class DRLFGSO(Learner):
    """DQN per device + FedAvg (eq. 7) + perturb-and-observe leader pricing.

    Hyper-parameters (saved in checkpoints): ``n_envs`` B training instances;
    ``hidden`` MLP widths; ``learning_rate`` (Adam), ``discount``, ``epsilon``
    (Table 1); ``buffer_size`` transitions per device (a multiple of
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
        # JSON round trips (checkpoint configs) turn tuples into lists.
        object.__setattr__(self, "hidden", _tuple_of_ints(self.hidden))
        for name in ("n_envs", "buffer_size", "batch_size", "grad_steps", "target_period",
                     "fedavg_period"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"drl_fgso: {name}={getattr(self, name)} must be >= 1")
        if self.buffer_size % self.n_envs:
            raise ValueError(f"drl_fgso: buffer_size={self.buffer_size} must be a multiple of "
                             f"n_envs={self.n_envs}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"drl_fgso: epsilon={self.epsilon} must be in [0, 1]")

    # -- pieces --------------------------------------------------------------
    def feature_dim(self, params) -> int:
        """Width F of a device state (eq. 1)."""
        return feature_dim(as_params(params).n_servers)

    def features(self, obs, prices, params) -> jax.Array:
        """[N, F] the device states the Q-networks see (eq. 1); subclasses add inputs."""
        return device_features(obs, prices, params)

    def optimizer(self) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(self.max_grad_norm),
                           optax.adam(self.learning_rate))

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
        n, m, b, c = p.n_devices, p.n_servers, self.n_envs, self.buffer_size
        f = self.feature_dim(p)
        k_net, k_env, k_run = jax.random.split(key, 3)
        global_model = qnet.init_params(k_net, f, m + 1, self.hidden)
        net = fedavg.broadcast(global_model, n)
        opt_state = jax.vmap(self.optimizer().init)(net)
        obs, env_state = jax.vmap(env.reset, (0, None))(jax.random.split(k_env, b), params)
        leader = jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), leader_init(p))
        buffer = ReplayBuffer(states=jnp.zeros((n, c, f), jnp.float32),
                              actions=jnp.zeros((n, c), jnp.int32),
                              rewards=jnp.zeros((n, c), jnp.float32),
                              next_states=jnp.zeros((n, c, f), jnp.float32),
                              ptr=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))
        return DRLTrainState(params=net, target_params=net, opt_state=opt_state, buffer=buffer,
                             data_count=jnp.zeros((n,), jnp.int32), env_state=env_state,
                             obs=obs, leader=leader, key=k_run, step=jnp.zeros((), jnp.int32))

    def act(self, key, q_params, features):
        """Epsilon-greedy actions [B, N] of the device models ``q_params`` [N, ...]
        for states ``features`` [B, N, F] (eq. 2)."""
        b, n = features.shape[:2]
        k_explore, k_random = jax.random.split(key)
        q = qnet.apply_devices(q_params, jnp.swapaxes(features, 0, 1))         # [N, B, M+1]
        greedy = jnp.argmax(q, axis=-1).T.astype(jnp.int32)                     # [B, N]
        explore = jax.random.uniform(k_explore, (b, n)) < self.epsilon
        random = jax.random.randint(k_random, (b, n), 0, q.shape[-1], jnp.int32)
        return jnp.where(explore, random, greedy)

    def _learn(self, key, state: DRLTrainState, buffer: ReplayBuffer):
        """``grad_steps`` Adam steps of every device on minibatches of its own buffer."""
        n = buffer.actions.shape[0]
        tx = self.optimizer()
        grad_fn = jax.vmap(jax.value_and_grad(self.td_loss, has_aux=True))

        def one(carry, k):
            params, opt_state = carry
            idx = jax.random.randint(k, (n, self.batch_size), 0, jnp.maximum(buffer.size, 1))

            def take(x):
                return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), 1)

            (loss, q_mean), grads = grad_fn(params, state.target_params, take(buffer.states),
                                            take(buffer.actions), take(buffer.rewards),
                                            take(buffer.next_states))
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
        decisions = jax.vmap(allocate, (0, 0, 0, None))(state.obs, actions, prices, p)
        next_obs, next_env, _, done, info = jax.vmap(env.step, (0, 0, 0, None))(
            jax.random.split(k_env, b), state.env_state, decisions, p)
        rewards = self.reward(info["cost"])                                     # [B, N] eq. 3

        # 2. Leaders observe their utility (eq. 15) and re-price.
        leader = jax.vmap(leader_update, (0, 0, None, None))(
            state.leader, info["leader_utility"], self.price_step, p)
        next_feats = feats_of(next_obs, leader.prices, p)                       # [B, N, F]

        # 3. Every device stores its B transitions in its own circular buffer.
        buf = state.buffer
        cap = buf.actions.shape[1]

        def put(store, new):          # store [N, C, ...], new [B, N, ...]
            new = jnp.swapaxes(new, 0, 1).astype(store.dtype)
            start = (0, buf.ptr) + (0,) * (store.ndim - 2)
            return jax.lax.dynamic_update_slice(store, new, start)

        buf = ReplayBuffer(states=put(buf.states, feats), actions=put(buf.actions, actions),
                           rewards=put(buf.rewards, rewards),
                           next_states=put(buf.next_states, next_feats),
                           ptr=(buf.ptr + b) % cap, size=jnp.minimum(buf.size + b, cap))
        data_count = state.data_count + b

        # 4. Local DQN training (eqs. 5-6), FedAvg (eq. 7), target refresh.
        net, opt_state, loss, q_mean = self._learn(k_learn, state, buf)
        step = state.step + 1
        net = jax.lax.cond(step % self.fedavg_period == 0,
                           lambda x: fedavg.aggregate(x, data_count), lambda x: x, net)
        target = jax.lax.cond(step % self.target_period == 0,
                              lambda: net, lambda: state.target_params)

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


__all__ = ["DRLFGSO", "DRLPolicy", "DRLTrainState", "LeaderState", "ReplayBuffer",
           "device_features", "feature_dim", "leader_init", "leader_update"]
