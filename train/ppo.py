"""PPO in the PureJaxRL style on ``mecjax.make_gymnax(task)``; writes ``results/rl/ppo.*``.

``PYTHONPATH=. python -m train.ppo [--config train/configs/rl/ppo.toml] [--out results/rl]
[--set NAME=VALUE ...]``

A single-file PPO (after purejaxrl/ppo.py): the whole training run is one jitted
``lax.scan`` over updates; each update collects ``num_steps`` sub-steps from
``num_envs`` vmapped environments, computes GAE, and takes ``update_epochs``
passes of clipped-surrogate minibatch updates of a flax ``TrainState`` (optax
Adam). The environment is :func:`mecjax.make_gymnax` wrapped, unchanged, in
gymnax's own ``FlattenObservationWrapper`` and ``LogWrapper``: an outside
algorithm plugs in as is.

Truncation: an MEC episode ends at its horizon by truncation, never by
termination, so GAE bootstraps every step from the value of
``info["final_observation"]`` (the observation that followed, before the
auto-reset) and only ``terminated`` stops the bootstrap; the advantage
recursion is cut at every episode end (terminated or truncated).

After training, the policy (greedy: the most probable action of each device in
turn) runs as a mecjax scheduler (:class:`PPOPolicy`) through
:func:`mecjax.rollout.rollout` on fresh instances, with the references on the
very same instances (common random numbers): mean slot cost with 95% intervals
over instances, and the paired difference to each reference.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mecjax.cli import ArgumentParser, parse_sets, read_toml, run_program
from mecjax.config import Scenario, as_params
from mecjax.env.types import Decision
from mecjax.outputs import UserError, dumps_strict, lock_output_dir, write_files_atomic
from mecjax.preflight import check_compiled
from mecjax.schedulers.base import Scheduler, fixed_prices, leaf_field

CONFIG = Path(__file__).resolve().parent / "configs" / "rl" / "ppo.toml"
COMMAND = "mecjax ppo"


# ----------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters of a run (``train/configs/rl/ppo.toml`` documents each)."""

    task: str = "paper"
    total_timesteps: int = 1_000_000
    num_envs: int = 64
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 8
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 10.0
    hidden: int = 64
    activation: str = "tanh"
    seeds: tuple[int, ...] = (0, 1)
    log_every: int = 0
    eval_instances: int = 64
    eval_slots: int = 0
    eval_seed: int = 1000
    references: tuple[str, ...] = ("local", "random", "nearest", "greedy")
    scenario: tuple[tuple[str, Any], ...] = ()

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size


_POSITIVE = ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches",
             "hidden", "eval_instances")
_UNIT = ("gamma", "gae_lambda")


def validate(cfg: PPOConfig) -> PPOConfig:
    """``cfg`` if every field is usable, else a :class:`UserError` naming the first bad one."""
    for f in dataclasses.fields(cfg):
        if f.name in ("seeds", "references", "scenario"):
            continue
        v, default = getattr(cfg, f.name), f.default
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if isinstance(default, bool):
            ok, kind = isinstance(v, bool), "bool (true or false)"
        elif isinstance(default, float):
            ok, kind = number and math.isfinite(v), "finite number"
        elif isinstance(default, int):
            ok, kind = number and isinstance(v, int), "int"
        else:
            ok, kind = isinstance(v, str), "string"
        if not ok:
            raise UserError(f"ppo config: {f.name}={v!r} must be a {kind}")
    for name in _POSITIVE:
        if getattr(cfg, name) < 1:
            raise UserError(f"ppo config: {name}={getattr(cfg, name)} must be >= 1")
    for name in _UNIT:
        if not 0 <= getattr(cfg, name) <= 1:
            raise UserError(f"ppo config: {name}={getattr(cfg, name)} must be in [0, 1]")
    for name in ("lr", "clip_eps", "max_grad_norm", "reward_scale"):
        if not getattr(cfg, name) > 0:
            raise UserError(f"ppo config: {name}={getattr(cfg, name)} must be > 0")
    for name in ("ent_coef", "vf_coef", "log_every", "eval_slots"):
        if getattr(cfg, name) < 0:
            raise UserError(f"ppo config: {name}={getattr(cfg, name)} must be >= 0")
    if cfg.activation not in ("tanh", "relu"):
        raise UserError(f"ppo config: activation={cfg.activation!r} must be 'tanh' or 'relu'")
    if cfg.batch_size % cfg.num_minibatches:
        raise UserError(f"ppo config: num_envs * num_steps = {cfg.batch_size} must be a multiple "
                        f"of num_minibatches={cfg.num_minibatches}")
    if cfg.num_updates < 1:
        raise UserError(f"ppo config: total_timesteps={cfg.total_timesteps} is less than one "
                        f"update of num_envs * num_steps = {cfg.batch_size} sub-steps")
    seeds = cfg.seeds
    if not seeds or not all(type(s) is int for s in seeds) or len(set(seeds)) < len(seeds):
        raise UserError(f"ppo config: seeds={list(cfg.seeds)} must be distinct ints (at least one)")
    from mecjax.schedulers import available

    unknown = [r for r in cfg.references if r not in available()]
    if unknown:
        raise UserError(f"ppo config: references {unknown} are not schedulers; available: "
                        f"{', '.join(available())}")
    scenario_of_config(cfg)
    return cfg


def scenario_of_config(cfg: PPOConfig) -> Scenario:
    """The task's :class:`Scenario` with the config's ``[scenario]`` overrides."""
    from mecjax.interfaces import scenario_of

    try:
        base = scenario_of(cfg.task)
        return base.replace(**dict(cfg.scenario)) if cfg.scenario else base
    except (ValueError, TypeError) as err:
        raise UserError(f"ppo config: {err}") from None


def load_config(path=CONFIG, overrides: dict | None = None) -> PPOConfig:
    """The :class:`PPOConfig` of the TOML file ``path`` (keys ``task``, ``[ppo]``,
    ``[eval]``, ``[scenario]``) with ``overrides`` ({name: value}, from ``--set``)."""
    path = Path(path)
    raw = read_toml(path)
    unknown = set(raw) - {"task", "ppo", "eval", "scenario"}
    if unknown:
        raise UserError(f"{path}: unknown section(s) or key(s) {sorted(unknown)}")
    flat = {"task": raw.get("task", PPOConfig.task), **raw.get("ppo", {})}
    flat.update({k if k in ("references",) else f"eval_{k}": v
                 for k, v in raw.get("eval", {}).items()})
    flat["scenario"] = tuple(sorted(raw.get("scenario", {}).items()))
    if "scenario" in (overrides or {}):
        raise UserError("ppo config: the scenario is set in the config file's [scenario] table, "
                        "not with --set")
    flat.update(overrides or {})
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    bad = sorted(set(flat) - names)
    if bad:
        raise UserError(f"ppo config: unknown setting(s) {bad}; known: {', '.join(sorted(names))}")
    for name in ("seeds", "references"):
        if name in flat:
            v = flat[name]
            flat[name] = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    return validate(PPOConfig(**flat))


# ----------------------------------------------------------------- the network


def _network(num_actions: int, hidden: int, activation: str):
    import flax.linen as nn
    from flax.linen.initializers import constant, orthogonal

    act = nn.relu if activation == "relu" else nn.tanh

    class ActorCritic(nn.Module):
        """Separate two-layer actor (logits over the M + 1 options) and critic (PureJaxRL's)."""

        @nn.compact
        def __call__(self, x):
            def mlp(y, last, scale):
                for _ in range(2):
                    y = act(nn.Dense(hidden, kernel_init=orthogonal(np.sqrt(2)),
                                     bias_init=constant(0.0))(y))
                return nn.Dense(last, kernel_init=orthogonal(scale), bias_init=constant(0.0))(y)

            logits = mlp(x, num_actions, 0.01)
            value = mlp(x, 1, 1.0)
            return logits, jnp.squeeze(value, -1)

    return ActorCritic()


class Transition(NamedTuple):
    terminated: jax.Array
    done: jax.Array
    action: jax.Array
    value: jax.Array
    final_value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    slot_cost: jax.Array
    slot_end: jax.Array
    episode_return: jax.Array
    episode_end: jax.Array


def gae(traj: Transition, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """(advantages, value targets) [T, E] of a trajectory, time-major.

    delta_t = r_t + gamma (1 - terminated_t) V(final_obs_t) - V(obs_t), where
    final_obs_t is the observation after step t before any auto-reset: at a
    truncation the return is bootstrapped from it, at a termination it is not.
    The recursion A_t = delta_t + gamma lam (1 - done_t) A_{t+1} stops at every
    episode end (the next step belongs to a fresh episode).
    """
    def back(adv, t):
        delta = t.reward + gamma * (1.0 - t.terminated) * t.final_value - t.value
        adv = delta + gamma * lam * (1.0 - t.done) * adv
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(traj.value[0]), traj, reverse=True)
    return adv, adv + traj.value


def make_train(cfg: PPOConfig, env, env_params):
    """``train(rng) -> {"runner_state", "metrics"}``: the whole PPO run as one jittable
    function (PureJaxRL's ``make_train``). ``env`` is a gymnax environment (here
    :func:`mecjax.make_gymnax`'s), wrapped in gymnax's FlattenObservationWrapper
    and LogWrapper. ``metrics`` holds one value per update: ``slot_cost`` (mean over
    the slots completed in the update's rollout), ``episode_return`` (mean over the
    episodes completed, NaN if none), the losses and ``entropy``."""
    import optax
    from flax.training.train_state import TrainState
    from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

    env = LogWrapper(FlattenObservationWrapper(env))
    n_actions = env.action_space(env_params).n
    network = _network(n_actions, cfg.hidden, cfg.activation)
    n_updates, n_envs, n_steps = cfg.num_updates, cfg.num_envs, cfg.num_steps
    step_env = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def schedule(count):
        frac = 1.0 - (count // (cfg.num_minibatches * cfg.update_epochs)) / n_updates
        return cfg.lr * frac

    def train(rng):
        rng, k_init, k_reset = jax.random.split(rng, 3)
        obs_shape = env.observation_space(env_params).shape
        params = network.init(k_init, jnp.zeros(obs_shape, jnp.float32))
        tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                         optax.adam(schedule if cfg.anneal_lr else cfg.lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, n_envs), env_params)

        def env_step(runner, _):
            train_state, env_state, last_obs, rng = runner
            rng, k_act, k_step = jax.random.split(rng, 3)
            logits, value = network.apply(train_state.params, last_obs)
            action = jax.random.categorical(k_act, logits)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
            obs, env_state, reward, terminated, truncated, info = step_env(
                jax.random.split(k_step, n_envs), env_state, action, env_params)
            _, final_value = network.apply(train_state.params, info["final_observation"])
            t = Transition(
                terminated=terminated.astype(jnp.float32),
                done=jnp.logical_or(terminated, truncated).astype(jnp.float32),
                action=action, value=value, final_value=final_value,
                reward=reward * cfg.reward_scale, log_prob=log_prob, obs=last_obs,
                slot_cost=info["slot_cost"], slot_end=info["slot_end"],
                episode_return=info["returned_episode_returns"],
                episode_end=info["returned_episode"])
            return (train_state, env_state, obs, rng), t

        def loss_fn(params, batch: Transition, adv, targets):
            logits, value = network.apply(params, batch.obs)
            logp_all = jax.nn.log_softmax(logits)
            log_prob = jnp.take_along_axis(logp_all, batch.action[:, None], 1)[:, 0]
            v_clipped = batch.value + jnp.clip(value - batch.value, -cfg.clip_eps, cfg.clip_eps)
            value_loss = 0.5 * jnp.maximum(jnp.square(value - targets),
                                           jnp.square(v_clipped - targets)).mean()
            ratio = jnp.exp(log_prob - batch.log_prob)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip_eps,
                                                            1 + cfg.clip_eps) * adv).mean()
            entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1).mean()
            total = actor_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
            return total, (value_loss, actor_loss, entropy)

        def update_minibatch(train_state, mb):
            grads_of = jax.value_and_grad(loss_fn, has_aux=True)
            (total, aux), grads = grads_of(train_state.params, *mb)
            return train_state.apply_gradients(grads=grads), (total, *aux)

        def update_epoch(carry, _):
            train_state, batch, rng = carry
            rng, k_perm = jax.random.split(rng)
            perm = jax.random.permutation(k_perm, cfg.batch_size)
            flat = jax.tree.map(lambda x: x.reshape((cfg.batch_size,) + x.shape[2:]), batch)
            mbs = jax.tree.map(lambda x: jnp.take(x, perm, 0).reshape(
                (cfg.num_minibatches, -1) + x.shape[1:]), flat)
            train_state, losses = jax.lax.scan(update_minibatch, train_state, mbs)
            return (train_state, batch, rng), losses

        def update(runner, index):
            runner, traj = jax.lax.scan(env_step, runner, None, n_steps)
            adv, targets = gae(traj, cfg.gamma, cfg.gae_lambda)
            train_state, env_state, last_obs, rng = runner
            (train_state, _, rng), losses = jax.lax.scan(
                update_epoch, (train_state, (traj, adv, targets), rng), None, cfg.update_epochs)
            ends = traj.slot_end.astype(jnp.float32)
            episodes = traj.episode_end.astype(jnp.float32)
            total, value_loss, actor_loss, entropy = (x.mean() for x in losses)
            metrics = {
                "slot_cost": jnp.sum(traj.slot_cost * ends) / jnp.maximum(ends.sum(), 1.0),
                "episode_return": jnp.where(
                    episodes.sum() > 0,
                    jnp.sum(traj.episode_return * episodes) / jnp.maximum(episodes.sum(), 1.0),
                    jnp.nan),
                "total_loss": total, "value_loss": value_loss, "actor_loss": actor_loss,
                "entropy": entropy,
            }
            if cfg.log_every:
                jax.lax.cond((index + 1) % cfg.log_every == 0,
                             lambda m: jax.debug.callback(_log_progress, index + 1, n_updates, m),
                             lambda m: None, metrics)
            return (train_state, env_state, last_obs, rng), metrics

        runner = (train_state, env_state, obs, rng)
        runner, metrics = jax.lax.scan(update, runner, jnp.arange(n_updates))
        return {"runner_state": runner, "metrics": metrics}

    return train


def _log_progress(update, n_updates, metrics):
    print(f"[ppo] update {int(update)}/{int(n_updates)}  slot cost "
          f"{float(metrics['slot_cost']):.5f}  entropy {float(metrics['entropy']):.3f}",
          flush=True)


# ----------------------------------------------------------------- the trained policy


@dataclasses.dataclass(frozen=True)
class PPOPolicy(Scheduler):
    """A trained PPO policy as a mecjax scheduler: the devices decide in turn, each
    seeing :func:`~mecjax.interfaces.gymnax_env.sequential_obs` (its features and
    the load assigned before it), as in the gymnax environment. ``greedy``: the
    most probable action (else a sample). Prices: the scenario's ``price_init``,
    the gymnax environment's default."""

    name = "ppo"
    hidden: int = 64
    activation: str = "tanh"
    # Leaves, not hyper-parameters: the greedy and the sampled policy of any seed's
    # weights run in one compiled rollout.
    greedy: Any = leaf_field(True)
    weights: Any = leaf_field()

    def act(self, key, sched_state, obs, params):
        from mecjax.interfaces.gymnax_env import sequential_obs

        p = as_params(params)
        prices = fixed_prices(p)
        net = _network(p.n_servers + 1, self.hidden, self.activation)

        def pick(offload, xs):
            i, k = xs
            logits, _ = net.apply(self.weights, sequential_obs(obs, offload, i, prices, p))
            a = jnp.where(self.greedy, jnp.argmax(logits), jax.random.categorical(k, logits))
            return offload.at[i].set(a.astype(jnp.int32)), None

        offload, _ = jax.lax.scan(pick, jnp.zeros((p.n_devices,), jnp.int32),
                                  (jnp.arange(p.n_devices), jax.random.split(key, p.n_devices)))
        return Decision(offload, prices), sched_state


# ----------------------------------------------------------------- the program


def evaluate_policies(policies: dict, scenario: Scenario, cfg: PPOConfig) -> dict:
    """``{name: [B] mean slot cost per instance}`` of each scheduler over the same
    ``eval_instances`` fresh instances (key ``eval_seed``) and ``eval_slots`` slots."""
    from mecjax.rollout import rollout

    key = jax.random.key(cfg.eval_seed)
    slots = cfg.eval_slots or scenario.horizon
    return {name: np.asarray(rollout(s, scenario, key, cfg.eval_instances, slots)["mean_cost"],
                             np.float64).mean(axis=1)
            for name, s in policies.items()}


def run(cfg: PPOConfig, out: Path, log=print) -> dict:
    """Train one policy per seed, evaluate them and the references, write the report."""
    from mecjax.interfaces.gymnax_env import make_gymnax
    from mecjax.schedulers import make
    from mecjax.stats import mean_ci, paired_diff_ci

    scenario = scenario_of_config(cfg)
    env, env_params = make_gymnax(scenario)
    t0 = time.perf_counter()
    train = jax.jit(make_train(cfg, env, env_params))
    compiled = train.lower(jax.random.key(cfg.seeds[0])).compile()
    check_compiled(compiled, f"PPO on N={scenario.n_devices} ({cfg.num_envs} envs x "
                   f"{cfg.num_steps} steps)", "--set num_envs=... or --set num_steps=...")
    compile_s = time.perf_counter() - t0
    log(f"[ppo] {scenario.n_devices} devices, {scenario.n_servers} servers: {cfg.num_updates} "
        f"updates of {cfg.batch_size} sub-steps per seed (compiled in {compile_s:.0f} s)")
    curves, policies, train_s = {}, {}, []
    for seed in cfg.seeds:
        t1 = time.perf_counter()
        result = compiled(jax.random.key(seed))
        metrics = jax.device_get(result["metrics"])
        train_s.append(time.perf_counter() - t1)
        curves[seed] = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        if not np.all(np.isfinite(curves[seed]["total_loss"])):
            raise RuntimeError(f"PPO seed {seed}: the loss became non-finite")
        weights = result["runner_state"][0].params
        for greedy in (True, False):
            policies[f"ppo {'greedy' if greedy else 'sampled'} (seed {seed})"] = PPOPolicy(
                hidden=cfg.hidden, activation=cfg.activation, greedy=greedy, weights=weights)
        log(f"[ppo] seed {seed}: trained in {train_s[-1]:.0f} s, last slot cost "
            f"{curves[seed]['slot_cost'][-1]:.5f}")
    for name in cfg.references:
        policies[name] = make(name)
    t2 = time.perf_counter()
    costs = evaluate_policies(policies, scenario, cfg)
    eval_s = time.perf_counter() - t2
    summary = {name: mean_ci(c) for name, c in costs.items()}
    diffs = {p: {r: paired_diff_ci(costs[p], costs[r]) for r in cfg.references}
             for p in policies if p.startswith("ppo")}
    report = {
        "config": {**dataclasses.asdict(cfg), "scenario": dict(cfg.scenario)},
        "scenario": {"n_devices": scenario.n_devices, "n_servers": scenario.n_servers,
                     "horizon": scenario.horizon},
        "timing_s": {"compile": compile_s, "train_per_seed": train_s, "evaluate": eval_s},
        "mean_cost": summary, "ppo_minus_reference": diffs,
    }
    _write_outputs(out, cfg, scenario, curves, summary, diffs, report)
    log(f"[ppo] evaluated on {cfg.eval_instances} fresh instances in {eval_s:.0f} s; wrote "
        f"{out}/ppo.md, ppo.csv, ppo_curve.csv, ppo.json, ppo.png")
    return report


def _fmt(ci) -> str:
    return f"{ci['mean']:.5f} ± {ci['ci95']:.5f}"


def _write_outputs(out: Path, cfg, scenario, curves, summary, diffs, report) -> None:
    """ppo.md, ppo.csv (scores), ppo_curve.csv, ppo.json and ppo.png, all or none."""
    scores = io.StringIO()
    w = csv.writer(scores, lineterminator="\n")
    w.writerow(["policy", "mean_cost", "ci95", "low", "high", "n_instances"])
    for name, ci in summary.items():
        w.writerow([name] + [f"{ci[k]:.6g}" for k in ("mean", "ci95", "low", "high")] + [ci["n"]])
    curve = io.StringIO()
    w = csv.writer(curve, lineterminator="\n")
    names = sorted(next(iter(curves.values())))
    w.writerow(["seed", "update", "timesteps"] + names)
    for seed, m in curves.items():
        for i in range(len(m[names[0]])):
            w.writerow([seed, i + 1, (i + 1) * cfg.batch_size] + [f"{m[k][i]:.6g}" for k in names])
    write_files_atomic({
        out / "ppo.md": _markdown(cfg, scenario, summary, diffs, report).encode(),
        out / "ppo.csv": scores.getvalue().encode(),
        out / "ppo_curve.csv": curve.getvalue().encode(),
        out / "ppo.json": dumps_strict(report, indent=2).encode(),
        out / "ppo.png": _plot(cfg, scenario, curves, summary),
    })


def _markdown(cfg, scenario, summary, diffs, report) -> str:
    t = report["timing_s"]
    slots = cfg.eval_slots or scenario.horizon
    lines = [
        "# PPO on `mecjax.make_gymnax` (PureJaxRL style)",
        "",
        f"Written by `PYTHONPATH=. python -m train.ppo` (`train/ppo.py`, config "
        f"`train/configs/rl/ppo.toml`). Task `{cfg.task}`: N = {scenario.n_devices} devices, "
        f"M = {scenario.n_servers} servers, horizon {scenario.horizon} slots; one sub-step per "
        f"device (docs/interfaces.md). Training: {cfg.num_updates} updates x {cfg.num_envs} envs "
        f"x {cfg.num_steps} sub-steps = {cfg.num_updates * cfg.batch_size:,} sub-steps "
        f"({cfg.num_updates * cfg.batch_size / scenario.n_devices:,.0f} slots) per seed, seeds "
        f"{list(cfg.seeds)}; compile {t['compile']:.0f} s, training "
        f"{', '.join(f'{s:.0f}' for s in t['train_per_seed'])} s per seed.",
        "",
        f"Evaluation: {cfg.eval_instances} fresh instances (key {cfg.eval_seed}, never seen in "
        f"training) x {slots} slots, every policy on the same instances; mean slot cost "
        f"(mean weighted device cost, eq. 3; lower is better) ± 95% t-interval over instances. "
        f"PPO greedy: each device takes its most probable action; PPO sampled: its action "
        f"is drawn from the policy, as in training.",
        "",
        "| policy | mean slot cost |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_fmt(ci)} |" for name, ci in summary.items()]
    lines += ["", "Paired difference PPO - reference on the same instances (negative: PPO is "
              "cheaper; the interval excludes 0 when the difference is significant):", "",
              "| policy | " + " | ".join(cfg.references) + " |",
              "|---|" + "---|" * len(cfg.references)]
    for p, d in diffs.items():
        lines.append(f"| {p} | " + " | ".join(_fmt(d[r]) for r in cfg.references) + " |")
    lines += ["", "Learning curve (mean slot cost of the sampled policy during training, per "
              "update): `ppo_curve.csv`, `ppo.png`. All numbers: `ppo.json`.", ""]
    return "\n".join(lines)


def _plot(cfg, scenario, curves, summary) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for seed, m in curves.items():
        x = np.arange(1, len(m["slot_cost"]) + 1) * cfg.batch_size
        ax.plot(x, m["slot_cost"], label=f"PPO seed {seed} (training, sampled)")
    for i, name in enumerate(r for r in cfg.references if r in summary):
        ax.axhline(summary[name]["mean"], ls="--", lw=1, color=f"C{i + len(curves)}",
                   label=f"{name} (evaluation)")
    # Log scale: early exploration can congest the servers (costs above 1) for a few updates.
    ax.set_yscale("log")
    ax.set_xlabel("environment sub-steps (one device decision each)")
    ax.set_ylabel("mean slot cost (eq. 3)")
    ax.set_title(f"PPO on make_gymnax('{cfg.task}'): N={scenario.n_devices}, "
                 f"M={scenario.n_servers}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def build_parser():
    ap = ArgumentParser(prog=COMMAND, description="PPO (PureJaxRL style) on mecjax.make_gymnax; "
                        "writes ppo.md, ppo.csv, ppo_curve.csv, ppo.json and ppo.png")
    ap.add_argument("--config", default=str(CONFIG), help="TOML config (default %(default)s)")
    ap.add_argument("--out", default="results/rl", help="output directory (default %(default)s)")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE",
                    help="override a setting of the config, e.g. --set total_timesteps=200000 "
                         "(repeatable; seeds=0,1 for a list)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = parse_sets(args.set)
    except ValueError as err:
        raise UserError(str(err)) from None
    cfg = load_config(args.config, overrides)
    with lock_output_dir(args.out, COMMAND, "--out"):
        run(cfg, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("ppo", main))
