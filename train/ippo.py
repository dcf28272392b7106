"""IPPO on ``mecjax.make_jaxmarl(task)``: a single-file independent PPO in the style
of JaxMARL's baselines (``baselines/IPPO/ippo_ff_*.py``, after PureJaxRL).

The environment is used as JaxMARL defines it: ``reset``/``step`` with its
auto-reset, dictionaries of observations, actions and rewards, and
``get_avail_actions``. The one option taken, ``final_observation=True``, gives the
observation that auto-reset replaces, because the horizon is a time limit: at
the last slot the advantage bootstraps from the value of that observation
instead of treating the end as terminal (``infos["terminated"]`` is always False).

* Device agents share one actor-critic (parameter sharing, as in the baselines):
  own observation (:func:`mecjax.env.device_features` row) -> ``Discrete(M + 1)``,
  with computing locally masked when the battery cannot pay for it.
* Server agents post the scenario's initial price (``learn_prices = false``, the
  default: the devices then face the prices every reference scheduler posts, so
  the evaluation compares like with like), or learn with their own shared
  actor-critic over ``price_levels`` price levels (``learn_prices = true``).

Training is one jitted ``lax.scan`` over updates (run in chunks to print
progress). Afterwards the trained policy runs as a :class:`mecjax.schedulers.
Scheduler` in :func:`mecjax.rollout.rollout` on fresh instances, against the
random, nearest and all-local references on the same instances (common random
numbers), and the results go to ``OUT/ippo.md``, ``ippo.csv`` and ``ippo.png``
(learning curve), all or none.

    PYTHONPATH=. python -m train.ippo [--config train/configs/rl/ippo.toml] [--out results/rl]
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from mecjax import rollout as mec_rollout
from mecjax import stats
from mecjax.cli import ArgumentParser, parse_sets, read_toml, run_program
from mecjax.config import Scenario, as_params
from mecjax.env.features import device_features, server_features
from mecjax.env.types import Decision
from mecjax.interfaces import scenario_of
from mecjax.interfaces.jaxmarl_env import local_available, make_jaxmarl
from mecjax.optim.pricing import initial_prices, price_levels
from mecjax.outputs import UserError, lock_output_dir, write_files_atomic
from mecjax.preflight import check_compiled
from mecjax.schedulers import Scheduler, leaf_field, make

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "rl" / "ippo.toml"
REFERENCES = ("random", "nearest", "local")


@dataclasses.dataclass(frozen=True)
class IPPOConfig:
    """Hyper-parameters (names as in JaxMARL's IPPO configs, lower case)."""

    seed: int = 0
    num_envs: int = 8            # parallel training instances
    num_steps: int = 100         # slots per instance per update
    total_timesteps: int = 96_000  # environment steps (slots x instances) in all
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.9           # a slot's cost depends on the next ones only through
    gae_lambda: float = 0.95     # battery and backlog: a short horizon suffices
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    learn_prices: bool = False
    price_levels: int = 4        # only with learn_prices
    chunks: int = 6              # progress reports (one jitted call each)
    eval_instances: int = 64
    eval_seed: int = 1_000_003   # fresh instances, unrelated to the training keys

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = {"int": int, "float": float, "bool": bool}[f.type]
            ok = isinstance(v, bool) if kind is bool else (
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and (kind is float or isinstance(v, int)) and math.isfinite(v))
            if not ok:
                raise ValueError(f"ippo config: {f.name}={v!r} must be a {f.type}")
        positive = ("num_envs", "num_steps", "total_timesteps", "update_epochs",
                    "num_minibatches", "hidden", "chunks", "eval_instances")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ippo config: {name}={getattr(self, name)} must be >= 1")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ippo config: {name}={getattr(self, name)} must be in [0, 1]")
        for name in ("lr", "clip_eps", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ippo config: {name}={getattr(self, name)} must be > 0")
        if self.price_levels < 2:
            raise ValueError(f"ippo config: price_levels={self.price_levels} must be >= 2")
        if self.num_updates < 1:
            raise ValueError(f"ippo config: total_timesteps={self.total_timesteps} is less "
                             f"than one update (num_envs x num_steps = "
                             f"{self.num_envs * self.num_steps})")

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_steps * self.num_envs)


def load_config(path, overrides: dict | None = None) -> tuple[Scenario, IPPOConfig]:
    """The scenario and hyper-parameters of a TOML file: ``task`` (a task name),
    an optional ``[scenario]`` table of :class:`Scenario` fields replaced in it, and
    the :class:`IPPOConfig` fields at top level; ``overrides`` (``--set``) win.
    ValueError naming the field."""
    path = Path(path)
    raw = read_toml(path)
    for name, value in (overrides or {}).items():
        # --set gives strings for booleans: true/false as TOML writes them.
        raw[name] = {"true": True, "false": False}.get(value, value) \
            if isinstance(value, str) else value
    scenario = scenario_of(raw.pop("task", "paper"))
    changes = raw.pop("scenario", {})
    fields = {f.name for f in dataclasses.fields(Scenario)}
    if not isinstance(changes, dict):
        raise ValueError(f"{path}: scenario must be a table of Scenario fields")
    if set(changes) - fields:
        raise ValueError(f"{path}: [scenario] has unknown field(s) {sorted(set(changes) - fields)}")
    scenario = scenario.replace(**changes)
    known = {f.name for f in dataclasses.fields(IPPOConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    return scenario, IPPOConfig(**raw)


# --------------------------------------------------------------------------- networks


def _init(gain: float):
    """Kernels with the variance of the baselines' orthogonal(gain) initialisation
    (gain^2 / fan), drawn uniformly: the same scale without a QR decomposition, whose
    compilation alone took longer than the rest of the initialisation on a CPU."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


class ActorCritic(nn.Module):
    """Two tanh MLP towers: action logits and a state value (the baselines' network;
    a near-zero logits layer starts the policy near uniform)."""

    n_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(np.sqrt(2)))(x))
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(np.sqrt(2)))(a))
        logits = nn.Dense(self.n_actions, kernel_init=_init(0.01))(a)
        c = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(np.sqrt(2)))(x))
        c = nn.tanh(nn.Dense(self.hidden, kernel_init=_init(np.sqrt(2)))(c))
        value = nn.Dense(1, kernel_init=_init(1.0))(c)
        return logits, value[..., 0]


def masked_logits(logits, avail):
    """Logits with unavailable actions at -1e9 (probability 0)."""
    return jnp.where(avail, logits, -1e9)


def log_prob(logits, action):
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], -1)[..., 0]


def entropy(logits):
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, -1)


# --------------------------------------------------------------------------- training


def _stack(d: dict, names) -> jax.Array:
    """[E, A, ...] from a dict of per-agent [E, ...] arrays."""
    return jnp.stack([d[a] for a in names], axis=1)


def gae(batch, cfg: IPPOConfig):
    """(advantages, targets) [T, E, A] with truncation handled: each step bootstraps
    from the value of its true next observation (the final one at a time limit),
    stops only at a termination, and the advantage trace is cut at every episode end."""
    def back(carry, x):
        reward, value, next_value, done, terminated = x
        delta = reward + cfg.gamma * (1.0 - terminated) * next_value - value
        adv = delta + cfg.gamma * cfg.gae_lambda * (1.0 - done) * carry
        return adv, adv

    done = jnp.broadcast_to(batch["done"][..., None], batch["reward"].shape)
    term = jnp.broadcast_to(batch["terminated"][..., None], batch["reward"].shape)
    _, adv = jax.lax.scan(back, jnp.zeros_like(batch["value"][0]),
                          (batch["reward"], batch["value"], batch["next_value"], done, term),
                          reverse=True)
    return adv, adv + batch["value"]


def ppo_update(train_state: TrainState, net: ActorCritic, batch, adv, targets, key,
               cfg: IPPOConfig):
    """``update_epochs`` epochs of clipped PPO over shuffled minibatches of every
    (slot, instance, agent) sample. Returns (train_state, mean losses)."""
    flat = {k: v.reshape((-1,) + v.shape[3:]) for k, v in batch.items()
            if k in ("obs", "avail", "action", "log_prob", "value")}
    flat["adv"], flat["target"] = adv.reshape(-1), targets.reshape(-1)
    size = flat["adv"].shape[0]
    mb = size // cfg.num_minibatches

    def loss_fn(params, b):
        logits, value = net.apply(params, b["obs"])
        logits = masked_logits(logits, b["avail"])
        ratio = jnp.exp(log_prob(logits, b["action"]) - b["log_prob"])
        a = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
        actor = -jnp.minimum(ratio * a, jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
        v_clip = b["value"] + jnp.clip(value - b["value"], -cfg.clip_eps, cfg.clip_eps)
        critic = 0.5 * jnp.maximum((value - b["target"]) ** 2, (v_clip - b["target"]) ** 2)
        ent = entropy(logits).mean()
        total = actor.mean() + cfg.vf_coef * critic.mean() - cfg.ent_coef * ent
        return total, {"actor_loss": actor.mean(), "value_loss": critic.mean(), "entropy": ent}

    def minibatch(state, b):
        grads, aux = jax.grad(loss_fn, has_aux=True)(state.params, b)
        return state.apply_gradients(grads=grads), aux

    def epoch(state, k):
        perm = jax.random.permutation(k, size)[: mb * cfg.num_minibatches]
        shuffled = jax.tree.map(lambda x: x[perm].reshape((cfg.num_minibatches, mb) + x.shape[1:]),
                                flat)
        return jax.lax.scan(minibatch, state, shuffled)

    train_state, aux = jax.lax.scan(epoch, train_state, jax.random.split(key, cfg.update_epochs))
    return train_state, jax.tree.map(jnp.mean, aux)


def make_train(scenario: Scenario, cfg: IPPOConfig):
    """``(env, init, run_chunk)``: ``init(key) -> runner`` and the jittable
    ``run_chunk(runner, n_updates) -> (runner, metrics {name: [n_updates]})``;
    ``runner = (train_states, env_state, obs, key)`` with ``train_states`` a dict
    ``{"device": TrainState, "server": TrainState}`` (no "server" with fixed prices)."""
    env = make_jaxmarl(scenario, final_observation=True,
                       price_levels=cfg.price_levels if cfg.learn_prices else None)
    classes = {"device": (env.devices, scenario.n_servers + 1)}
    if cfg.learn_prices:
        classes["server"] = (env.servers, cfg.price_levels)
    nets = {c: ActorCritic(k, cfg.hidden) for c, (_, k) in classes.items()}
    e = cfg.num_envs

    def schedule(count):
        done_frac = (count // (cfg.num_minibatches * cfg.update_epochs)) / cfg.num_updates
        return cfg.lr * (1.0 - done_frac) if cfg.anneal_lr else cfg.lr

    def init(key):
        k_net, k_env, k_run = jax.random.split(key, 3)
        states = {}
        for i, (c, (names, _)) in enumerate(classes.items()):
            x = jnp.zeros(env.observation_space(names[0]).shape)
            params = nets[c].init(jax.random.fold_in(k_net, i), x)
            tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                             optax.adam(schedule, eps=1e-5))
            states[c] = TrainState.create(apply_fn=nets[c].apply, params=params, tx=tx)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, e))
        return states, env_state, obs, k_run

    fixed_price = jnp.full((e, 1), scenario.price_init, jnp.float32)

    def env_step(carry, _):
        states, env_state, obs, key = carry
        key, k_act, k_step = jax.random.split(key, 3)
        avail = jax.vmap(env.get_avail_actions)(env_state)
        actions, rec = {}, {}
        for i, (c, (names, _)) in enumerate(classes.items()):
            o, av = _stack(obs, names), _stack(avail, names)
            logits, value = nets[c].apply(states[c].params, o)
            logits = masked_logits(logits, av)
            act = jax.random.categorical(jax.random.fold_in(k_act, i), logits)
            actions.update({a: act[:, j] for j, a in enumerate(names)})
            rec[c] = {"obs": o, "avail": av, "action": act, "log_prob": log_prob(logits, act),
                      "value": value}
        if not cfg.learn_prices:
            actions.update({a: fixed_price for a in env.servers})
        obs, env_state, reward, done, info = jax.vmap(env.step)(
            jax.random.split(k_step, e), env_state, actions)
        for c, (names, _) in classes.items():
            _, next_value = nets[c].apply(states[c].params,
                                          _stack(info["final_observation"], names))
            rec[c].update(reward=_stack(reward, names), next_value=next_value,
                          done=done["__all__"].astype(jnp.float32),
                          terminated=info["terminated"][:, 0].astype(jnp.float32))
        logs = {"mean_cost": info["mean_cost"][:, 0], "revenue": info["revenue"][:, 0],
                "server_reward": _stack(reward, env.servers).mean(-1)}
        return (states, env_state, obs, key), (rec, logs)

    def update(runner, _):
        (states, env_state, obs, key), (traj, logs) = jax.lax.scan(
            env_step, runner, None, cfg.num_steps)
        key, k_upd = jax.random.split(key)
        metrics = jax.tree.map(jnp.mean, logs)
        for i, c in enumerate(classes):
            adv, targets = gae(traj[c], cfg)
            states[c], losses = ppo_update(states[c], nets[c], traj[c], adv, targets,
                                           jax.random.fold_in(k_upd, i), cfg)
            metrics.update({f"{c}_{k}": v for k, v in losses.items()})
        return (states, env_state, obs, key), metrics

    def run_chunk(runner, n_updates: int):
        return jax.lax.scan(update, runner, None, n_updates)

    return env, init, run_chunk


def train(scenario: Scenario, cfg: IPPOConfig, log=print, preflight: bool = True,
          compiler_options: dict | None = None):
    """Train IPPO; returns ``(train_states, metrics {name: [num_updates]}, seconds)``.
    ``preflight``: refuse a chunk whose compiled program would not fit in memory;
    ``compiler_options``: XLA options of the chunk programs (a smoke test passes a
    low optimisation level, which compiles faster)."""
    env, init, run_chunk = make_train(scenario, cfg)
    runner = jax.jit(init)(jax.random.key(cfg.seed))
    chunks = min(cfg.chunks, cfg.num_updates)
    sizes = [cfg.num_updates // chunks + (i < cfg.num_updates % chunks) for i in range(chunks)]
    programs = {}
    for size in sorted(set(sizes)):
        programs[size] = jax.jit(run_chunk, static_argnums=1).lower(runner, size).compile(
            compiler_options)
        if preflight:
            check_compiled(programs[size], f"ippo training chunk of {size} updates",
                           "num_envs or num_steps (--set num_envs=4)")
    t0, done, parts = time.perf_counter(), 0, []
    for size in sizes:
        runner, metrics = programs[size](runner)
        parts.append(jax.device_get(metrics))
        done += size
        log(f"[ippo] update {done}/{cfg.num_updates} ({done * cfg.num_envs * cfg.num_steps} "
            f"env steps, {time.perf_counter() - t0:.0f} s): mean slot cost "
            f"{float(np.mean(parts[-1]['mean_cost'])):.4f}")
    metrics = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return runner[0], metrics, time.perf_counter() - t0


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class IPPOPolicy(Scheduler):
    """The trained IPPO agents as a scheduler: each device acts on its own
    :func:`device_features` row (locally masked when its battery cannot pay), each
    server posts its price from its :func:`server_features` row (or the initial
    price); ``greedy``: the most probable action, else a sample of the policy."""

    name = "ippo"
    device_params: Any = leaf_field()
    server_params: Any = leaf_field()
    hidden: int = 64
    levels: int = 0                # price levels of the server policy; 0: initial price
    greedy: bool = True

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        k_dev, k_srv = jax.random.split(key)
        logits, _ = ActorCritic(p.n_servers + 1, self.hidden).apply(
            self.device_params, device_features(obs, params))
        avail = jnp.ones(logits.shape, bool).at[:, 0].set(local_available(obs, params))
        logits = masked_logits(logits, avail)
        offload = (jnp.argmax(logits, -1) if self.greedy
                   else jax.random.categorical(k_dev, logits)).astype(jnp.int32)
        if self.levels:
            s_logits, _ = ActorCritic(self.levels, self.hidden).apply(
                self.server_params, server_features(obs, params))
            idx = jnp.argmax(s_logits, -1) if self.greedy else jax.random.categorical(k_srv,
                                                                                       s_logits)
            prices = price_levels(params, self.levels)[idx]
        else:
            prices = initial_prices(params)
        return Decision(offload, prices), sched_state


def evaluate(scenario: Scenario, cfg: IPPOConfig, states) -> dict[str, dict]:
    """Per-instance mean slot cost and revenue of IPPO (greedy and sampled) and of
    the references, on ``eval_instances`` fresh instances (the same for all):
    ``{method: {"mean_cost": [B], "revenue": [B]}}``."""
    key = jax.random.key(cfg.eval_seed)
    levels = cfg.price_levels if cfg.learn_prices else 0
    server = states["server"].params if cfg.learn_prices else None
    methods = {f"ippo ({'greedy' if g else 'sampled'})": IPPOPolicy(
        states["device"].params, server, cfg.hidden, levels, g) for g in (True, False)}
    methods.update({name: make(name) for name in REFERENCES})
    out = {}
    for name, sched in methods.items():
        per_slot = mec_rollout.rollout(sched, scenario, key, cfg.eval_instances)
        out[name] = {k: np.asarray(per_slot[k], np.float64).mean(axis=1)
                     for k in ("mean_cost", "revenue", "offload_fraction")}
    return out


# --------------------------------------------------------------------------- report


def _fmt(ci: dict, digits: int = 4) -> str:
    return f"{ci['mean']:.{digits}f} ± {ci['ci95']:.{digits}f}"


def report(scenario: Scenario, cfg: IPPOConfig, results: dict, metrics: dict, seconds: float,
           config_path: str, total_seconds: float | None = None) -> dict[str, bytes]:
    """``{file name: bytes}`` of ippo.md, ippo.csv and ippo.png. ``seconds``: of
    training (compiled); ``total_seconds``: from start to evaluated, if measured."""
    base = "ippo (greedy)"
    rows = []
    for name, r in results.items():
        cost, rev = stats.mean_ci(r["mean_cost"]), stats.mean_ci(r["revenue"])
        diff = stats.paired_diff_ci(results[base]["mean_cost"], r["mean_cost"])
        rows.append((name, cost, rev, stats.mean_ci(r["offload_fraction"]), diff))
    csv_lines = ["method,mean_cost,mean_cost_ci95,revenue,revenue_ci95,offload_fraction,"
                 "ippo_greedy_minus_method,diff_ci95,instances"]
    for name, cost, rev, off, diff in rows:
        csv_lines.append(f"{name},{cost['mean']:.6g},{cost['ci95']:.6g},{rev['mean']:.6g},"
                         f"{rev['ci95']:.6g},{off['mean']:.6g},{diff['mean']:.6g},"
                         f"{diff['ci95']:.6g},{cost['n']}")
    n_steps = cfg.num_updates * cfg.num_envs * cfg.num_steps
    servers = (f"learn a shared price policy over {cfg.price_levels} levels"
               if cfg.learn_prices else f"post the initial price {scenario.price_init}")
    md = [
        "# IPPO on the JaxMARL interface (`mecjax.make_jaxmarl`)",
        "",
        f"Written by `python -m train.ippo --config {config_path}`. Scenario: N = "
        f"{scenario.n_devices} devices, M = {scenario.n_servers} servers, horizon "
        f"{scenario.horizon} slots (the default scenario of docs/model.md otherwise). "
        f"Training: {cfg.num_updates} updates x {cfg.num_envs} instances x {cfg.num_steps} "
        f"slots = {n_steps:,} environment steps, seed {cfg.seed}: {seconds:.0f} s of "
        f"training on the {jax.devices()[0].platform.upper()}"
        + (f", {total_seconds:.0f} s end to end (compilation, training and evaluation)"
           if total_seconds is not None else "")
        + f". Device agents share one actor-critic; servers {servers}.",
        "",
        f"Evaluation: {cfg.eval_instances} fresh instances x {scenario.horizon} slots (seed "
        f"{cfg.eval_seed}, never used in training), the same for every method; each value "
        f"is the mean over instances of the per-instance average over slots ± the "
        f"half-width of its 95% t-interval. The last column is the paired difference of "
        f"IPPO (greedy) minus the method on the same instances: negative = IPPO is "
        f"cheaper.",
        "",
        "| method | mean slot cost | server revenue / slot | offload fraction | "
        "IPPO (greedy) - method |",
        "|---|---|---|---|---|",
    ]
    for name, cost, rev, off, diff in rows:
        md.append(f"| {name} | {_fmt(cost)} | {_fmt(rev)} | {off['mean']:.2f} | "
                  + ("-" if name == base else _fmt(diff)) + " |")
    verdict = []
    for ref in ("random", "nearest", "local"):
        d = stats.paired_diff_ci(results[base]["mean_cost"], results[ref]["mean_cost"])
        word = ("cheaper than" if d["high"] < 0 else "dearer than" if d["low"] > 0
                else "not distinguishable from")
        verdict.append(f"{word} {ref} ({d['mean']:+.4f} ± {d['ci95']:.4f})")
    md += ["", "IPPO (greedy) is " + "; ".join(verdict) + ".", "",
           "Learning curve: `ippo.png` (mean slot cost of the training batch per update).", ""]

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    x = (np.arange(len(metrics["mean_cost"])) + 1) * cfg.num_envs * cfg.num_steps
    ax.plot(x, metrics["mean_cost"], label="IPPO (training batch)")
    colors = {"random": "tab:red", "nearest": "tab:green", "local": "tab:gray"}
    for ref in REFERENCES:
        ax.axhline(float(np.mean(results[ref]["mean_cost"])), ls="--", color=colors[ref],
                   label=f"{ref} (evaluation)")
    ax.axhline(float(np.mean(results[base]["mean_cost"])), ls=":", color="tab:blue",
               label="IPPO greedy (evaluation)")
    ax.set_xlabel("environment steps (slots x instances)")
    ax.set_ylabel("mean weighted cost per slot")
    ax.set_title(f"IPPO on make_jaxmarl, N={scenario.n_devices}, M={scenario.n_servers}")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    return {"ippo.md": "\n".join(md).encode(), "ippo.csv": ("\n".join(csv_lines) + "\n").encode(),
            "ippo.png": png.getvalue()}


# --------------------------------------------------------------------------- program


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="mecjax ippo", description=__doc__.split("\n\n")[0])
    default = (DEFAULT_CONFIG.relative_to(Path.cwd()) if DEFAULT_CONFIG.is_relative_to(Path.cwd())
               else DEFAULT_CONFIG)
    ap.add_argument("--config", default=str(default),
                    help="TOML file: task, [scenario] changes, hyper-parameters")
    ap.add_argument("--out", default="results/rl", help="output directory (ippo.md/.csv/.png)")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE",
                    help="override a config field, e.g. --set total_timesteps=8000")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario, cfg = load_config(args.config, parse_sets(args.set))
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from None
    with lock_output_dir(args.out, "ippo", "--out"):
        t0 = time.perf_counter()
        states, metrics, seconds = train(scenario, cfg)
        results = evaluate(scenario, cfg, states)
        files = report(scenario, cfg, results, metrics, seconds, args.config,
                       time.perf_counter() - t0)
        write_files_atomic({Path(args.out) / k: v for k, v in files.items()})
    for name, r in results.items():
        print(f"{name:>16}: mean slot cost {_fmt(stats.mean_ci(r['mean_cost']))}")
    print(f"wrote {args.out}/ippo.md, ippo.csv, ippo.png ({seconds:.0f} s of training, "
          f"{time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("ippo", main))
