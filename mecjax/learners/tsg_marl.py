"""TSG-MARL learner: MADDPG for the leader-follower (Stackelberg) pricing and
offloading game of paper section 3.2 (eqs. 15-17), PureJaxRL style.

Agents (centralised training, decentralised execution):

* **Leaders**: the M servers. A deterministic price actor mu^L maps server
  j's own row of :func:`~mecjax.env.features.server_features` [4] (backlog,
  last price, mean channel, offered load) to a price in [price_min,
  price_max] through a sigmoid. Its reward is the leader utility of eq. 15,
  ``info["leader_utility"]``, divided by ``utility_scale`` and clipped to
  +-``reward_clip``.
* **Followers**: the N devices. An offloading actor pi^F maps device i's row
  of :func:`~mecjax.env.features.device_features` [5 + 3M] (eq. 1: battery,
  task, CPU, power, observed channels, last prices and backlogs) to M + 1
  logits; at execution the device takes the argmax. Its reward is minus its
  weighted cost (eq. 3 / 16) divided by ``cost_scale`` (0.1 ~ the mean
  all-local cost at Table 1) and clipped to [-``reward_clip``, 0] (a
  vanishing channel gives a huge but finite latency; the clip keeps the
  critic's targets bounded).
* **Parameter sharing**: one leader actor serves every server and one
  follower actor every device, each applied to its agent's own features
  (and likewise one critic per class), so the networks are independent of N
  and a policy is one small pytree.

Centralised critics (eq. 17). With ``glob`` = [mean over devices of the
device features (5 + 3M), all server features flattened (4M)]:

* Q_L(s, p_j) = LeaderCritic([server_features_j, u_j, u (all M price fractions,
  own entry = u_j), glob, offload fractions of all devices over the M + 1
  options]) -> scalar, u = (p - price_min) / (price_max - price_min).
* Q_F(s, a) = FollowerCritic([device_features_i, u, glob, fractions of the
  *other* devices over the M + 1 options])[a_i] -> its own action picks the
  output entry.

Training (one ``update``): every one of the B training instances plays one
slot with exploration (epsilon-uniform offloading actions,
:func:`mecjax.learners.common.epsilon_greedy`; Gaussian noise of std
``price_noise`` x (price range) on prices, clipped), shares from
:func:`mecjax.optim.allocation.allocate`; the transitions (:class:`Transition`,
one per instance-slot) go into a replay ring buffer of ``buffer_size``
(:class:`mecjax.learners.common.ReplayBuffer`); instances whose episode ended
are reset (:func:`mecjax.env.reset_where`). Then one MADDPG step on a
minibatch of ``batch_size`` transitions:

* critics: squared TD error to y = r + discount Q'(s', a') where a' are the
  target actors' (deterministic, argmax / sigmoid) actions in s'. Episodes end
  only by the time limit, so targets always bootstrap (the objective of
  eq. 16 is an infinite discounted sum).
* leader actor: maximise Q_L(s, mu(o_j)) with the other leaders' prices from
  the buffer (the MADDPG gradient); follower actor: maximise
  Q_F(s, .)[a_i] with a_i a Gumbel-softmax straight-through sample of
  pi^F(o_i) (hard one-hot forward, soft gradient). The other devices'
  actions that Q_F is conditioned on are, with ``others_from_policy`` (the
  default), the current shared actor's greedy actions on the same state
  rather than the buffer's: with one shared follower policy the buffer's
  others are the stale policy, and best-responding to it made the whole
  population swing between ~10% and ~90% offloading from one chunk to the
  next (measured at N=50); against the current policy it settles (offload
  fraction 0.30-0.36). ``others_from_policy=0`` gives plain MADDPG.
* smoothing regulariser of section 3.2: L_reg = ``smooth_lambda`` x
  ||pi_t - pi_{t-1}||^2 added to each actor loss, pi_{t-1} the outputs of the
  actor parameters before the previous update on the same batch (softmax
  probabilities for followers, price fractions for leaders).
* ``logit_reg`` x mean(logits^2) in the follower actor loss (as in the
  reference MADDPG implementation of Lowe et al. 2017): without it the
  logits grow until the softmax saturates, the Gumbel-softmax gradient
  vanishes and the followers freeze on whichever option the early critic
  preferred (measured: all-local although the critic ranked offloading
  higher for 95% of the devices).
* soft target updates with rate ``target_rate`` (``optax.incremental_update``).

Measured (Table 1, N = 50..150, 6000 updates): the leaders learn to post
price_max, since eq. 15's revenue p_j G_j outweighs the demand lost (the
followers still offload 16-34% of tasks at that price, the heavy tasks with
good channels); the followers' cost ends 3-8% below all-local.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mecjax.config import as_params
from mecjax.env import env
from mecjax.env.features import (SERVER_FEATURES, device_feature_dim, device_features,
                                 server_features)
from mecjax.env.types import EnvState, Observation
from mecjax.learners.base import Learner, register_learner
from mecjax.learners.common import (ReplayBuffer, check_hyper, clipped_adam, epsilon_greedy,
                                    reset_envs, step_envs)
from mecjax.nets import actor_critic as ac
from mecjax.optim import allocation

NETS = ("leader_actor", "follower_actor", "leader_critic", "follower_critic")
ACTORS = ("leader_actor", "follower_actor")


@struct.dataclass
class Transition:
    """One instance-slot (s, a, r, s'): an item of the replay buffer."""

    dev: jax.Array          # [N, 5 + 3M] device features of s (eq. 1)
    srv: jax.Array          # [M, 4] server features of s
    next_dev: jax.Array     # [N, 5 + 3M] of s'
    next_srv: jax.Array     # [M, 4] of s'
    offload: jax.Array      # [N] int32 executed actions 0..M
    price_frac: jax.Array   # [M] posted price fractions u in [0, 1]
    dev_reward: jax.Array   # [N] scaled follower rewards
    srv_reward: jax.Array   # [M] scaled leader rewards


@struct.dataclass
class TSGTrainState:
    """Everything a TSG-MARL run needs to continue bit-identically."""

    params: dict            # NETS -> flax params
    target_params: dict     # NETS -> target params
    prev_params: dict       # ACTORS -> actor params before the last update (L_reg)
    opt_state: dict         # NETS -> optax states
    buffer: ReplayBuffer    # of Transition: leaves [C, ...]
    env_state: EnvState     # [B] training instances
    obs: Observation        # [B]
    key: jax.Array          # typed PRNG key
    step: jax.Array         # [] int32 updates done


# ---------------------------------------------------------------------------
# Critic inputs
# ---------------------------------------------------------------------------

def global_features(dev, srv):
    """[..., 5 + 3M + 4M] the critics' view of the global state s: mean-pooled
    device features and all server features."""
    return jnp.concatenate([jnp.mean(dev, -2), srv.reshape(srv.shape[:-2] + (-1,))], -1)


def action_fractions(offload, n_options):
    """[..., M + 1] fraction of devices on each option, and [..., N, M + 1] the
    same over the *other* devices of each device."""
    onehot = jax.nn.one_hot(offload, n_options)                         # [..., N, M+1]
    n = offload.shape[-1]
    counts = jnp.sum(onehot, -2)
    others = (counts[..., None, :] - onehot) / max(n - 1, 1)
    return counts / n, others


def follower_critic_input(dev, srv, offload, price_frac, n_options):
    """[..., N, d_F] input of Q_F for every device (see module docstring)."""
    glob = global_features(dev, srv)
    _, others = action_fractions(offload, n_options)
    ctx = jnp.concatenate([price_frac, glob], -1)
    ctx = jnp.broadcast_to(ctx[..., None, :], dev.shape[:-1] + ctx.shape[-1:])
    return jnp.concatenate([dev, ctx, others], -1)


def leader_critic_input(dev, srv, offload, price_frac, own_frac, n_options):
    """[..., M, d_L] input of Q_L for every server: server j's row, its own
    price fraction ``own_frac[..., j]``, all prices with entry j replaced by
    it (the MADDPG substitution of the own action), glob and the followers'
    action fractions."""
    m = srv.shape[-2]
    glob = global_features(dev, srv)
    frac, _ = action_fractions(offload, n_options)
    eye = jnp.eye(m, dtype=bool)
    prices = jnp.where(eye, own_frac[..., :, None], price_frac[..., None, :])   # [..., M, M]
    ctx = jnp.concatenate([glob, frac], -1)
    ctx = jnp.broadcast_to(ctx[..., None, :], srv.shape[:-1] + ctx.shape[-1:])
    return jnp.concatenate([srv, own_frac[..., None], prices, ctx], -1)


def follower_smoothing(params, prev_params, dev, smooth_lambda):
    """Follower part of L_reg = lambda ||pi_t - pi_{t-1}||^2 (section 3.2): the
    mean over devices and samples of the squared change of the softmax
    probabilities [M + 1] of the follower actor on ``dev`` [..., N, 5 + 3M]."""
    p_new = jax.nn.softmax(ac.follower_logits(params, dev))
    p_old = jax.nn.softmax(ac.follower_logits(prev_params, dev))
    return smooth_lambda * jnp.mean(jnp.sum((p_new - p_old) ** 2, -1))


def leader_smoothing(params, prev_params, srv, smooth_lambda):
    """Leader part of L_reg: lambda times the mean squared change of the price
    fractions of the leader actor on ``srv`` [..., M, 4]."""
    u_new = ac.leader_fraction(params, srv)
    u_old = ac.leader_fraction(prev_params, srv)
    return smooth_lambda * jnp.mean((u_new - u_old) ** 2)


def smoothing_penalty(nets, prev, dev, srv, smooth_lambda):
    """``(follower_reg, leader_reg)``: L_reg of both actor classes between the
    actor params in ``nets`` and ``prev`` (dicts with ``follower_actor`` and
    ``leader_actor``). Zero iff the actors' outputs are unchanged."""
    return (follower_smoothing(nets["follower_actor"], prev["follower_actor"], dev, smooth_lambda),
            leader_smoothing(nets["leader_actor"], prev["leader_actor"], srv, smooth_lambda))


def greedy_actions(policy, obs: Observation, params):
    """Decentralised execution: ``(offload [N] int32, prices [M])``.

    Each device takes the argmax of its follower actor's logits on its own
    :func:`~mecjax.env.features.device_features` row; each server posts its
    leader actor's price on its own :func:`~mecjax.env.features.server_features`
    row.
    """
    p = as_params(params)
    logits = ac.follower_logits(policy["follower_actor"], device_features(obs, p))
    u = ac.leader_fraction(policy["leader_actor"], server_features(obs, p))
    offload = jnp.argmax(logits, -1).astype(jnp.int32)
    prices = ac.price_from_fraction(u, p.price_min, p.price_max).astype(jnp.float32)
    return offload, prices


# ---------------------------------------------------------------------------
# The learner
# ---------------------------------------------------------------------------

@register_learner
@dataclasses.dataclass(frozen=True)
class TSGMARLLearner(Learner):
    """MADDPG leaders (prices) and followers (offloading); see module docstring."""

    name = "tsg_marl"
    scheduler_name = "tsg_marl"

    n_envs: int = 8                    # B training instances
    buffer_size: int = 2048            # C transitions (instance-slots)
    batch_size: int = 16               # transitions per gradient step (x N devices, x M servers)
    actor_hidden: tuple = (64, 64)
    critic_hidden: tuple = (64, 64)
    learning_rate: float = 1e-3        # actors and critics (Table 1)
    discount: float = 0.9              # Table 1
    target_rate: float = 0.01          # soft target update rate
    epsilon: float = 0.1               # follower exploration: uniform random action (Table 1)
    price_noise: float = 0.1           # leader exploration: Gaussian std / price range (Table 1)
    gumbel_temperature: float = 1.0
    smooth_lambda: float = 0.01        # L_reg weight (section 3.2)
    others_from_policy: int = 1        # follower actor loss: others' actions from the current actor
    logit_reg: float = 1e-3            # weight of mean(logits^2) in the follower actor loss
    cost_scale: float = 0.1            # follower reward = -cost / cost_scale
    utility_scale: float = 1.0         # leader reward = U_j / utility_scale
    reward_clip: float = 10.0          # |scaled reward| bound
    max_grad_norm: float = 10.0

    def __post_init__(self):
        check_hyper(self, counts=("n_envs", "buffer_size", "batch_size"),
                    widths=("actor_hidden", "critic_hidden"),
                    fractions=("discount", "epsilon"), rates=("target_rate",),
                    positive=("learning_rate", "gumbel_temperature",
                              "cost_scale", "utility_scale", "reward_clip", "max_grad_norm"),
                    non_negative=("price_noise", "smooth_lambda", "logit_reg"))
        if self.others_from_policy not in (0, 1):
            raise ValueError(f"tsg_marl: others_from_policy={self.others_from_policy!r} must be "
                             f"0 or 1")
        if self.buffer_size < self.n_envs:
            raise ValueError(f"tsg_marl: buffer_size={self.buffer_size} must be >= "
                             f"n_envs={self.n_envs} (one update adds n_envs transitions)")

    # -- networks ------------------------------------------------------------
    def _modules(self, n_options):
        return {
            "leader_actor": ac.LeaderActor(self.actor_hidden),
            "follower_actor": ac.FollowerActor(self.actor_hidden, n_options),
            "leader_critic": ac.LeaderCritic(self.critic_hidden),
            "follower_critic": ac.FollowerCritic(self.critic_hidden, n_options),
        }

    def optimizer(self) -> optax.GradientTransformation:
        return clipped_adam(self.learning_rate, self.max_grad_norm)

    def init_nets(self, key, params) -> dict:
        """Fresh parameters of the four networks."""
        p = as_params(params)
        n, m, k = p.n_devices, p.n_servers, p.n_servers + 1
        dev = jnp.zeros((n, device_feature_dim(m)))
        srv = jnp.zeros((m, SERVER_FEATURES))
        off = jnp.zeros((n,), jnp.int32)
        u = jnp.zeros((m,))
        inputs = {
            "leader_actor": srv,
            "follower_actor": dev,
            "leader_critic": leader_critic_input(dev, srv, off, u, u, k),
            "follower_critic": follower_critic_input(dev, srv, off, u, k),
        }
        mods = self._modules(k)
        keys = jax.random.split(key, len(NETS))
        return {name: mods[name].init(kk, inputs[name]) for name, kk in zip(NETS, keys)}

    def init(self, key, params) -> TSGTrainState:
        """Fresh networks, optimizers, empty replay and B reset instances (jitted)."""
        return _jit_init(self, key, params)

    def _init(self, key, params) -> TSGTrainState:
        p = as_params(params)
        n, m = p.n_devices, p.n_servers
        k_net, k_env, key = jax.random.split(key, 3)
        nets = self.init_nets(k_net, p)
        tx = self.optimizer()
        obs, states = reset_envs(k_env, self.n_envs, params)
        dev = jnp.zeros((n, device_feature_dim(m)), jnp.float32)
        srv = jnp.zeros((m, SERVER_FEATURES), jnp.float32)
        item = Transition(dev=dev, srv=srv, next_dev=dev, next_srv=srv,
                          offload=jnp.zeros((n,), jnp.int32), price_frac=jnp.zeros((m,)),
                          dev_reward=jnp.zeros((n,)), srv_reward=jnp.zeros((m,)))
        copy = lambda t: jax.tree.map(lambda x: x, t)  # noqa: E731
        return TSGTrainState(
            params=nets,
            target_params=copy(nets),
            prev_params={a: copy(nets[a]) for a in ACTORS},
            opt_state={name: tx.init(nets[name]) for name in NETS},
            buffer=ReplayBuffer.init(item, self.buffer_size), env_state=states, obs=obs,
            key=key, step=jnp.zeros((), jnp.int32))

    def init_policy(self, key, params) -> dict:
        """The untrained policy: equal to ``policy(init(key, params))``, without
        building the training instances and the replay buffer."""
        k_net, _, _ = jax.random.split(key, 3)
        nets = self.init_nets(k_net, params)
        return {a: nets[a] for a in ACTORS}

    def policy(self, train_state) -> dict:
        """The execution-time arrays: the two shared actors."""
        return {a: train_state.params[a] for a in ACTORS}

    # -- acting ---------------------------------------------------------------
    def _explore(self, key, nets, obs, p):
        """[B, N] offloading actions and [B, M] price fractions with exploration,
        and the features ``dev`` [B, N, F], ``srv`` [B, M, 4] they were chosen on."""
        dev = jax.vmap(device_features, (0, None))(obs, p)
        srv = jax.vmap(server_features, (0, None))(obs, p)
        k_act, k_noise = jax.random.split(key)
        greedy = jnp.argmax(ac.follower_logits(nets["follower_actor"], dev), -1)
        offload = epsilon_greedy(k_act, greedy, p.n_servers + 1, self.epsilon)
        u = ac.leader_fraction(nets["leader_actor"], srv)
        u = jnp.clip(u + self.price_noise * jax.random.normal(k_noise, u.shape), 0.0, 1.0)
        return dev, srv, offload, u

    # -- losses ---------------------------------------------------------------
    def _losses(self, key, ts: TSGTrainState, batch: Transition, p):
        k = p.n_servers + 1
        mods = self._modules(k)
        dev, ndev = batch.dev, batch.next_dev                   # [K, N, F]
        srv, nsrv = batch.srv, batch.next_srv                   # [K, M, 4]
        tg = ts.target_params

        # Targets: the target actors' deterministic actions in s'.
        n_off = jnp.argmax(mods["follower_actor"].apply(tg["follower_actor"], ndev), -1)
        n_u = mods["leader_actor"].apply(tg["leader_actor"], nsrv)
        q_f_next = mods["follower_critic"].apply(
            tg["follower_critic"], follower_critic_input(ndev, nsrv, n_off, n_u, k))
        q_f_next = jnp.take_along_axis(q_f_next, n_off[..., None], -1)[..., 0]
        y_f = batch.dev_reward + self.discount * q_f_next                     # [K, N]
        q_l_next = mods["leader_critic"].apply(
            tg["leader_critic"], leader_critic_input(ndev, nsrv, n_off, n_u, n_u, k))
        y_l = batch.srv_reward + self.discount * q_l_next                     # [K, M]
        y_f, y_l = jax.lax.stop_gradient(y_f), jax.lax.stop_gradient(y_l)

        def follower_critic_loss(w):
            q = mods["follower_critic"].apply(
                w, follower_critic_input(dev, srv, batch.offload, batch.price_frac, k))
            q = jnp.take_along_axis(q, batch.offload[..., None], -1)[..., 0]
            return jnp.mean((q - y_f) ** 2)

        def leader_critic_loss(w):
            q = mods["leader_critic"].apply(
                w, leader_critic_input(dev, srv, batch.offload, batch.price_frac,
                                       batch.price_frac, k))
            return jnp.mean((q - y_l) ** 2)

        # Actors against the current critics (MADDPG), plus L_reg.
        if self.others_from_policy:
            others_off = jnp.argmax(
                mods["follower_actor"].apply(ts.params["follower_actor"], dev), -1)
        else:
            others_off = batch.offload
        f_in = follower_critic_input(dev, srv, others_off, batch.price_frac, k)
        q_f_all = mods["follower_critic"].apply(ts.params["follower_critic"], f_in)  # [K, N, M+1]
        gumbel = jax.random.gumbel(key, q_f_all.shape)

        def follower_actor_loss(w):
            logits = mods["follower_actor"].apply(w, dev)
            soft = jax.nn.softmax((logits + gumbel) / self.gumbel_temperature)
            hard = jax.nn.one_hot(jnp.argmax(logits + gumbel, -1), k)
            sample = hard + soft - jax.lax.stop_gradient(soft)   # straight-through
            q = jnp.sum(sample * jax.lax.stop_gradient(q_f_all), -1)
            reg = follower_smoothing(w, ts.prev_params["follower_actor"], dev, self.smooth_lambda)
            return -jnp.mean(q) + reg + self.logit_reg * jnp.mean(logits ** 2), reg

        def leader_actor_loss(w):
            u = mods["leader_actor"].apply(w, srv)                       # [K, M]
            q = mods["leader_critic"].apply(
                ts.params["leader_critic"],
                leader_critic_input(dev, srv, batch.offload, batch.price_frac, u, k))
            reg = leader_smoothing(w, ts.prev_params["leader_actor"], srv, self.smooth_lambda)
            return -jnp.mean(q) + reg, reg

        return {"follower_critic": follower_critic_loss, "leader_critic": leader_critic_loss,
                "follower_actor": follower_actor_loss, "leader_actor": leader_actor_loss}

    # -- one update -------------------------------------------------------------
    def update(self, train_state: TSGTrainState, params):
        """One slot on each of the B instances, then one MADDPG step (pure, jittable)."""
        ts = train_state
        p = as_params(params)
        key, k_act, k_step, k_reset, k_batch, k_gumbel = jax.random.split(ts.key, 6)

        # 1. Act with exploration and step every instance.
        dev, srv, offload, u = self._explore(k_act, ts.params, ts.obs, p)
        prices = ac.price_from_fraction(u, p.price_min, p.price_max).astype(jnp.float32)
        _, next_obs, next_state, done, info = step_envs(k_step, ts.env_state, ts.obs, offload,
                                                        prices, params)

        # 2. Store the transitions (executed actions, scaled rewards of eqs. 15-16).
        dev_reward = jnp.clip(-info["cost"] / self.cost_scale, -self.reward_clip, 0.0)
        srv_reward = jnp.clip(info["leader_utility"] / self.utility_scale,
                              -self.reward_clip, self.reward_clip)
        buffer = ts.buffer.add(Transition(
            dev=dev, srv=srv, next_dev=jax.vmap(device_features, (0, None))(next_obs, p),
            next_srv=jax.vmap(server_features, (0, None))(next_obs, p),
            offload=info["offload"], price_frac=u, dev_reward=dev_reward, srv_reward=srv_reward))

        # 3. Auto-reset finished instances.
        obs, env_state = env.reset_where(k_reset, done, next_obs, next_state, params)

        # 4. One MADDPG step on a minibatch.
        losses = self._losses(k_gumbel, ts, buffer.sample(k_batch, self.batch_size), p)
        tx = self.optimizer()
        nets, opt_state, out = dict(ts.params), dict(ts.opt_state), {}
        for name in NETS:
            if name in ACTORS:
                (loss, reg), grads = jax.value_and_grad(losses[name], has_aux=True)(ts.params[name])
                out[f"{name}_reg"] = reg
            else:
                loss, grads = jax.value_and_grad(losses[name])(ts.params[name])
            upd, opt_state[name] = tx.update(grads, ts.opt_state[name], ts.params[name])
            nets[name] = optax.apply_updates(ts.params[name], upd)
            out[f"{name}_loss"] = loss
        new = TSGTrainState(
            params=nets,
            target_params=optax.incremental_update(nets, ts.target_params, self.target_rate),
            prev_params={a: ts.params[a] for a in ACTORS}, opt_state=opt_state, buffer=buffer,
            env_state=env_state, obs=obs, key=key, step=ts.step + 1)
        metrics = {
            "mean_cost": jnp.mean(info["cost"]),
            "leader_utility": jnp.mean(info["leader_utility"]),
            "offload_fraction": jnp.mean(info["offload_fraction"]),
            "mean_price": jnp.mean(prices),
            **out,
        }
        return new, metrics


@functools.partial(jax.jit, static_argnums=0)
def _jit_init(learner, key, params):
    return learner._init(key, params)


def policy_decision(policy: Any, obs: Observation, params):
    """The executed :class:`~mecjax.env.Decision` of a TSG-MARL policy:
    greedy actions and prices (:func:`greedy_actions`) with the convex
    bandwidth/CPU shares of :func:`mecjax.optim.allocation.allocate`."""
    offload, prices = greedy_actions(policy, obs, params)
    return allocation.allocate(obs, offload, prices, params)
