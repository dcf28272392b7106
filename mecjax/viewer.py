"""A picture of one MEC instance: :func:`render` draws a state (and a slot's
decision) as a matplotlib figure; :func:`render_rgb` returns it as an RGB array
(Gymnasium / PettingZoo ``render_mode="rgb_array"``).

What is drawn (``docs/viewer.md``):

* the square area (``Scenario.area_m``);
* each server as a square in its colour, labelled with its price and this
  slot's offered load (work sent to it / what it computes in a slot), and a bar
  beside it for its backlog (full bar: ``BACKLOG_FULL_SLOTS`` slots of its work);
* each device as a disc: its colour is where its task went (grey: computed
  locally; the server's colour: offloaded there), its area grows with the task's
  cycles, its opacity with its battery (opaque: full, faint: empty); a red
  outline marks a device the battery forced to offload (its decision said local);
* a line from each offloading device to its server, more opaque the higher its
  uplink rate;
* a title with the slot, the mean weighted cost, latency and device energy.

The viewer draws only: it writes no file (programs save its figures, e.g.
``mecjax rollout-gif``) and never touches pyplot's global state, so it works
headless (Agg) and inside other figures (``ax=``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mecjax.config import EnvParams, Scenario, as_params
from mecjax.env.types import Decision, EnvState, Observation, Outcome

Params = Scenario | EnvParams

LOCAL_COLOR = (0.62, 0.62, 0.62)       # a task computed on its device
UNDECIDED_COLOR = (0.1, 0.1, 0.1)      # no decision given: where tasks go is unknown
FORCED_EDGE = (0.85, 0.0, 0.0)         # battery forced the device to offload
BACKLOG_FULL_SLOTS = 2.0               # a full backlog bar: two slots of a server's work
RATE_FAINT, RATE_OPAQUE = 1e5, 1e8     # bit/s: link opacity from faint to opaque (log scale)
FIGSIZE = (6.0, 6.4)

# Per-field dimensions of a single instance (a batch adds leading axes).
_STATE_NDIM = {"t": 0, "positions": 2, "server_positions": 2, "task_bits": 1,
               "task_cycles": 1, "cpu_freq": 1, "tx_power": 1, "gain_observed": 2,
               "battery": 1, "backlog": 1, "prices": 1}
_OUTCOME_FIELDS = ("latency", "energy", "cost", "rate", "offload")


def server_colors(n_servers: int) -> np.ndarray:
    """[M, 3] RGB colour of each server (device j's colour when it offloads to server j+1):
    matplotlib's tab10 without its grey (kept for local tasks), a spread of turbo beyond 9."""
    from matplotlib import colormaps

    if n_servers <= 9:
        tab = colormaps["tab10"].colors
        return np.array([tab[i] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)[:n_servers]])
    return colormaps["turbo"](np.linspace(0.05, 0.95, n_servers))[:, :3]


def destination_colors(offload, n_servers: int) -> np.ndarray:
    """[N, 3] RGB of each device given its executed action (0: local grey, j: server j's)."""
    table = np.vstack([np.array(LOCAL_COLOR)[None], server_colors(n_servers)])
    return table[np.asarray(offload, int)]


def _host(x):
    return None if x is None else np.asarray(x)


def _check_state(state, p: EnvParams) -> dict[str, np.ndarray]:
    if not isinstance(state, (EnvState, Observation)):
        raise TypeError(f"state must be a mecjax EnvState or Observation, got "
                        f"{type(state).__name__}")
    kind = type(state).__name__
    arrays = {name: _host(getattr(state, name)) for name in _STATE_NDIM}
    for name, ndim in _STATE_NDIM.items():
        if arrays[name].ndim != ndim:
            raise ValueError(
                f"{kind}.{name} has shape {arrays[name].shape}, one instance needs {ndim} "
                f"axes: render draws a single instance, not a batch (pick one, e.g. "
                f"jax.tree.map(lambda x: x[0], state))")
    n, m = p.n_devices, p.n_servers
    for name, shape in (("positions", (n, 2)), ("server_positions", (m, 2)),
                        ("task_cycles", (n,)), ("battery", (n,)), ("backlog", (m,)),
                        ("prices", (m,)), ("gain_observed", (n, m))):
        if arrays[name].shape != shape:
            raise ValueError(f"{kind}.{name} has shape {arrays[name].shape}; params "
                             f"(n_devices={n}, n_servers={m}) need {shape}")
    return arrays


def _check_outcome(outcome, n: int) -> dict[str, np.ndarray]:
    if isinstance(outcome, Outcome):
        arrays = {k: _host(getattr(outcome, k)) for k in _OUTCOME_FIELDS}
    elif isinstance(outcome, Mapping):
        missing = [k for k in _OUTCOME_FIELDS if k not in outcome]
        if missing:
            raise ValueError(f"outcome lacks {missing}: pass a mecjax Outcome or a step's info "
                             f"dict (per-device {', '.join(_OUTCOME_FIELDS)})")
        arrays = {k: _host(outcome[k]) for k in _OUTCOME_FIELDS}
    else:
        raise TypeError(f"outcome must be a mecjax Outcome or a step's info dict, got "
                        f"{type(outcome).__name__}")
    for k, v in arrays.items():
        if v.shape != (n,):
            raise ValueError(f"outcome.{k} has shape {v.shape}; one instance of {n} devices "
                             f"needs ({n},) (render draws a single instance, not a batch)")
    return arrays


def _check_decision(decision, n: int, m: int) -> dict[str, np.ndarray]:
    if not isinstance(decision, Decision):
        raise TypeError(f"decision must be a mecjax Decision or None, got "
                        f"{type(decision).__name__}")
    off, prices = _host(decision.offload), _host(decision.prices)
    if off.shape != (n,):
        raise ValueError(f"Decision.offload has shape {off.shape}; one instance of {n} devices "
                         f"needs ({n},) (render draws a single instance, not a batch)")
    if prices.shape != (m,):
        raise ValueError(f"Decision.prices has shape {prices.shape}; {m} servers need ({m},) "
                         f"(render draws a single instance, not a batch)")
    return {"offload": off, "prices": prices}


def render(state: EnvState | Observation, decision: Decision | None, params: Params,
           ax=None, outcome: Outcome | Mapping | None = None):
    """A matplotlib ``Figure`` of one instance: the area, servers (price, load, backlog),
    devices coloured by where their task went, sized by its cycles, as opaque as their
    battery is full, links to their server by uplink rate, and a title with the slot's
    mean cost, latency and energy (see the module docstring for the encoding).

    ``state``: an :class:`EnvState` or :class:`Observation` of a single instance (a
    batched one is a ValueError naming the field). ``decision``: the slot's
    :class:`Decision`, or None to draw the state only. ``outcome``: the slot's per-device
    :class:`Outcome` (or a step's ``info`` dict); when None and ``decision`` is given it
    is computed with :func:`mecjax.env.evaluate`, from the true channel for an EnvState,
    from last slot's channel for an Observation (the title then says "estimated").
    ``ax``: draw into this Axes (its figure is returned) instead of a new figure.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    p = as_params(params)
    n, m = p.n_devices, p.n_servers
    s = _check_state(state, p)
    dec = None if decision is None else _check_decision(decision, n, m)
    estimated = False
    if dec is not None and outcome is None:
        from mecjax.env import env

        outcome = env.evaluate(state, decision, params)
        estimated = isinstance(state, Observation)
    out = None if outcome is None else _check_outcome(outcome, n)

    if ax is None:
        fig = Figure(figsize=FIGSIZE)
        fig.subplots_adjust(left=0.1, right=0.97, top=0.91, bottom=0.14)
        ax = fig.add_subplot()
    fig = ax.figure
    area = float(p.area_m)
    colors = server_colors(m)

    # Links first, so that devices and servers are drawn over them.
    if out is not None:
        executed = out["offload"].astype(int)
        sent = np.flatnonzero(executed > 0)
        segments = np.stack([s["positions"][sent], s["server_positions"][executed[sent] - 1]], 1)
        level = (np.log10(np.maximum(out["rate"][sent], 1.0)) - np.log10(RATE_FAINT)) / (
            np.log10(RATE_OPAQUE) - np.log10(RATE_FAINT))
        link_rgba = np.column_stack([colors[executed[sent] - 1],
                                     0.12 + 0.78 * np.clip(level, 0.0, 1.0)])
        ax.add_collection(LineCollection(segments, colors=link_rgba, linewidths=0.9,
                                         zorder=1, gid="links"))
        face = destination_colors(executed, m)
    else:
        executed = None
        face = np.tile(UNDECIDED_COLOR, (n, 1))

    # Devices: colour = destination, area = task cycles, opacity = battery.
    battery = np.clip(s["battery"] / float(p.battery_capacity_j), 0.0, 1.0)
    sizes = 10.0 + 110.0 * np.clip(s["task_cycles"] / float(p.task_cycles_max), 0.0, 1.0)
    forced = (np.zeros(n, bool) if executed is None or dec is None
              else (executed != dec["offload"]) & (dec["offload"] == 0))
    edge = np.where(forced[:, None], np.array(FORCED_EDGE)[None], np.zeros((n, 3)))
    ax.scatter(s["positions"][:, 0], s["positions"][:, 1], s=sizes,
               c=np.column_stack([face, 0.2 + 0.8 * battery]),
               edgecolors=np.column_stack([edge, np.ones(n)]),
               linewidths=np.where(forced, 1.6, 0.5), zorder=3, gid="devices")

    # Servers: marker, label (price, offered load), backlog bar.
    # [M]: the server CPU may be one value or one per server (heterogeneous servers)
    capacity = np.broadcast_to(np.asarray(p.server_cpu_hz, float), (m,)) * float(p.slot_s)
    prices = dec["prices"] if dec is not None else s["prices"]
    load = (None if executed is None else
            np.array([s["task_cycles"][executed == j + 1].sum() for j in range(m)]) / capacity)
    ax.scatter(s["server_positions"][:, 0], s["server_positions"][:, 1], s=170, marker="s",
               c=colors, edgecolors="black", linewidths=1.2, zorder=4, gid="servers")
    bar_h, bar_w = 0.12 * area, 0.022 * area
    for j, (x, y) in enumerate(s["server_positions"]):
        fill = min(float(s["backlog"][j]) / capacity[j] / BACKLOG_FULL_SLOTS, 1.0)
        bx, by = x + 0.035 * area, y - bar_h / 2
        ax.add_patch(Rectangle((bx, by), bar_w, bar_h, facecolor="white", edgecolor="black",
                               linewidth=0.8, zorder=4, gid=f"backlog_box_{j + 1}"))
        ax.add_patch(Rectangle((bx, by), bar_w, fill * bar_h, facecolor=colors[j],
                               edgecolor="none", zorder=5, gid=f"backlog_fill_{j + 1}"))
        label = f"S{j + 1}  p {float(prices[j]):.2f}"
        if load is not None:
            label += f"\nload {100 * load[j]:.0f}%"
        ax.annotate(label, (x, y), xytext=(0, 11), textcoords="offset points", ha="center",
                    va="bottom", fontsize=7.5, zorder=6,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colors[j],
                          "alpha": 0.85})

    ax.set_xlim(-0.02 * area, 1.02 * area)
    ax.set_ylim(-0.02 * area, 1.02 * area)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("x (m)   ·   disc area: task cycles   ·   opacity: battery   ·   "
                  f"bar: backlog (full = {BACKLOG_FULL_SLOTS:g} slots)", fontsize=7)
    ax.set_ylabel("y (m)", fontsize=7)

    title = f"slot {int(s['t'])}   ·   {n} devices, {m} servers"
    if out is not None:
        title += (f"\nmean cost {float(np.mean(out['cost'])):.3f}   ·   latency "
                  f"{1e3 * float(np.mean(out['latency'])):.0f} ms   ·   energy "
                  f"{float(np.mean(out['energy'])):.3f} J   ·   offloaded "
                  f"{int(np.sum(executed > 0))}/{n}" + ("  (estimated)" if estimated else ""))
    else:
        title += "\nno decision: state only"
    ax.set_title(title, fontsize=9)

    def disc(label, face, edge="black", width=0.5):
        return Line2D([], [], ls="", marker="o", ms=6, mfc=face, mec=edge, mew=width,
                      label=label)

    if out is None:
        handles = [disc("device (no decision)", UNDECIDED_COLOR)]
    else:
        handles = [disc("local", LOCAL_COLOR)]
        handles += [disc(f"to S{j + 1}", colors[j]) for j in range(min(m, 9))]
        handles.append(disc("forced (battery)", "white", FORCED_EDGE, 1.6))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1),
              ncol=min(len(handles), 6), fontsize=7, frameon=False, handletextpad=0.2,
              columnspacing=0.9)
    return fig


def render_rgb(state: EnvState | Observation, decision: Decision | None, params: Params,
               outcome: Outcome | Mapping | None = None, *, dpi: float = 80.0) -> np.ndarray:
    """[H, W, 3] uint8 RGB image of :func:`render` (arguments as there) at ``dpi`` dots
    per inch (80: 480 x 512 pixels), for ``render_mode="rgb_array"``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = render(state, decision, params, outcome=outcome)
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]


__all__ = ["BACKLOG_FULL_SLOTS", "FORCED_EDGE", "LOCAL_COLOR", "UNDECIDED_COLOR",
           "destination_colors", "render", "render_rgb", "server_colors"]
