"""Graph view of an observation: a ``jraph.GraphsTuple`` for GNN schedulers.

Pure JAX, jittable and vmappable, with static shapes (they depend only on the
static sizes N, M and ``knn`` of the scenario). Only causal information is
used: the channel is ``gain_observed`` (last slot's), never the true ``gain``,
so an :class:`~mecjax.env.EnvState` and its :class:`~mecjax.env.Observation`
give the same graph.

Layout of one graph (N devices, M servers, k = min(knn, N - 1)):

* nodes ``[N + M, NODE_FEATURES]`` float32: devices ``0..N-1`` first, then
  servers ``N..N+M-1``. Columns (one width for both node types):

  ====  ==========================================  ==============================
  col   device i (paper eq. 10: E, D, C, h, f)      server j
  ====  ==========================================  ==============================
  0     battery / battery_capacity_j                0
  1     task_bits / task_bits_max                   backlog / (server_cpu_hz slot_s)
  2     task_cycles / task_cycles_max               last price / price_max
  3     best observed channel in scaled dB          mean over devices of the
                                                    observed channel in scaled dB
  4     cpu_freq / device_cpu_max_hz                server_cpu_hz / its maximum over
                                                    servers (1 for one CPU for all)
  5     1 (is_device)                               0
  6     0                                           1 (is_server)
  ====  ==========================================  ==============================

  The scaled columns are those of :func:`mecjax.env.features.device_features`
  and :func:`~mecjax.env.features.server_features` (scaled dB:
  :func:`~mecjax.env.features.scaled_db`).

* edges ``[E, EDGE_FEATURES]`` float32 with ``E = 2 N M + N k``
  (:func:`num_edges`), in this order:

  1. ``N M`` device -> server edges, device-major (edge ``i M + j`` is
     device i -> server j);
  2. ``N M`` server -> device edges, same order (server j -> device i);
  3. ``N k`` device -> device edges, device-major: device i to its k nearest
     other devices, nearest first.

  Columns: ``[observed channel i-j in scaled dB, distance / area_m]``
  for device-server edges (both directions); ``[0, distance / area_m]`` for
  device-device edges.
* senders, receivers ``[E]`` int32; n_node ``[1]`` = N + M and n_edge ``[1]``
  = E, int32.
* globals ``[1, GLOBAL_FEATURES]`` float32: ``[t / horizon, mean last price /
  price_max]``.

Batches: ``jax.vmap(graph_from_observation, in_axes=(0, None))`` gives a
GraphsTuple with a leading batch axis on every field; :func:`batch_graphs`
flattens it into one jraph batch (node indices offset per graph), as
``jraph.batch`` would, but jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph

from mecjax.config import EnvParams, Scenario, as_params
from mecjax.env.dynamics import distances
from mecjax.env.features import device_features, scaled_db, server_features
from mecjax.env.types import EnvState, Observation

Params = Scenario | EnvParams

NODE_FEATURES = 7    # 5 physical columns + one-hot [is_device, is_server]
EDGE_FEATURES = 2    # [channel in scaled dB (0 for device-device), distance / area_m]
GLOBAL_FEATURES = 2  # [t / horizon, mean price / price_max]


def knn_count(params: Params) -> int:
    """k = min(knn, N - 1): device-device edges leaving each device (static)."""
    p = as_params(params)
    return max(0, min(p.knn, p.n_devices - 1))


def num_nodes(params: Params) -> int:
    """N + M nodes per graph (static)."""
    p = as_params(params)
    return p.n_devices + p.n_servers


def num_edges(params: Params) -> int:
    """2 N M + N k edges per graph (static)."""
    p = as_params(params)
    return 2 * p.n_devices * p.n_servers + p.n_devices * knn_count(p)


def knn_indices(positions, k: int):
    """[N, k] int32: for each device its k nearest other devices, nearest first."""
    n = positions.shape[0]
    if k == 0:
        return jnp.zeros((n, 0), jnp.int32)
    diff = positions[:, None, :] - positions[None, :, :]
    d2 = jnp.sum(diff**2, axis=-1)
    d2 = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d2)
    _, idx = jax.lax.top_k(-d2, k)
    return idx.astype(jnp.int32)


def graph_from_observation(obs: Observation | EnvState, params: Params) -> jraph.GraphsTuple:
    """One scheduling graph of ``obs`` (see the module docstring for the layout).

    ``obs`` may be an Observation or an EnvState (only ``gain_observed`` is
    read, never the true ``gain``); ``params`` a Scenario or EnvParams.
    """
    p = as_params(params)
    n, m = p.n_devices, p.n_servers
    k = knn_count(p)
    f32 = jnp.float32

    gain_db = scaled_db(obs.gain_observed).astype(f32)                       # [N, M]

    # -- nodes: eq. 10's columns, picked from the agents' feature vectors ------
    dev = device_features(obs, p)                                            # [N, 5 + 3M]
    srv = server_features(obs, p)                                            # [M, 4]
    device = jnp.stack([
        dev[:, 0],                     # battery
        dev[:, 1],                     # task bits
        dev[:, 2],                     # task cycles
        jnp.max(gain_db, axis=-1),     # best observed channel
        dev[:, 3],                     # CPU frequency
        jnp.ones((n,)),
        jnp.zeros((n,)),
    ], -1).astype(f32)                                                       # [N, 7]
    if jnp.ndim(p.server_cpu_hz) == 0:
        cpu_rel = jnp.ones((m,))
    else:
        cpu_rel = p.server_cpu_hz / jnp.max(p.server_cpu_hz)
    server = jnp.stack([
        jnp.zeros((m,)),
        srv[:, 0],                     # backlog
        srv[:, 1],                     # last price
        srv[:, 2],                     # mean observed channel
        cpu_rel,                       # server CPU, relative
        jnp.zeros((m,)),
        jnp.ones((m,)),
    ], -1).astype(f32)                                                       # [M, 7]
    nodes = jnp.concatenate([device, server], 0)                             # [N+M, 7]

    # -- device <-> server edges ---------------------------------------------
    dev_idx = jnp.repeat(jnp.arange(n, dtype=jnp.int32), m)                  # [N M] i-major
    srv_idx = jnp.tile(jnp.arange(m, dtype=jnp.int32), n) + n                # [N M]
    ds_dist = distances(obs.positions, obs.server_positions) / p.area_m      # [N, M]
    ds_feat = jnp.stack([gain_db.reshape(-1), ds_dist.reshape(-1)], -1).astype(f32)

    # -- device -> device kNN edges ------------------------------------------
    nbr = knn_indices(obs.positions, k)                                      # [N, k]
    knn_send = jnp.repeat(jnp.arange(n, dtype=jnp.int32), k)                 # [N k]
    knn_recv = nbr.reshape(-1)
    dd = jnp.sqrt(jnp.sum((obs.positions[knn_send] - obs.positions[knn_recv]) ** 2, -1))
    dd_feat = jnp.stack([jnp.zeros_like(dd), dd / p.area_m], -1).astype(f32)

    senders = jnp.concatenate([dev_idx, srv_idx, knn_send]).astype(jnp.int32)
    receivers = jnp.concatenate([srv_idx, dev_idx, knn_recv]).astype(jnp.int32)
    edges = jnp.concatenate([ds_feat, ds_feat, dd_feat], 0).reshape(-1, EDGE_FEATURES)

    globals_ = jnp.stack([obs.t / p.horizon,
                          jnp.mean(obs.prices) / p.price_max]).astype(f32)[None, :]

    return jraph.GraphsTuple(
        nodes=nodes,
        edges=edges,
        senders=senders,
        receivers=receivers,
        globals=globals_,
        n_node=jnp.array([n + m], jnp.int32),
        n_edge=jnp.array([num_edges(p)], jnp.int32),
    )


def batch_graphs(graphs: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """Flatten a vmapped GraphsTuple into one jraph batch (jittable).

    ``graphs`` has leading batch axes on every field (one or more, e.g. from
    nested ``vmap``); ``graphs.n_node`` is ``[*batch, n_graph]``. The result is
    what ``jraph.batch`` returns for the list of the individual graphs in
    row-major order: nodes, edges and globals concatenated, n_node / n_edge
    concatenated, and senders / receivers offset by the number of nodes of the
    graphs before them.
    """
    batch_shape = graphs.n_node.shape[:-1]
    nb = len(batch_shape)

    def flat(x):
        return x.reshape((-1,) + x.shape[nb + 1:])

    n_per = jnp.sum(graphs.n_node, axis=-1).reshape(-1)                       # [B]
    offsets = (jnp.cumsum(n_per) - n_per).astype(graphs.senders.dtype)        # [B]
    n_edges = graphs.senders.shape[nb]

    def shift(idx):
        return (idx.reshape(-1, n_edges) + offsets[:, None]).reshape(-1)

    return jraph.GraphsTuple(
        nodes=jax.tree.map(flat, graphs.nodes),
        edges=jax.tree.map(flat, graphs.edges),
        senders=shift(graphs.senders),
        receivers=shift(graphs.receivers),
        globals=jax.tree.map(flat, graphs.globals),
        n_node=graphs.n_node.reshape(-1),
        n_edge=graphs.n_edge.reshape(-1),
    )


__all__ = ["EDGE_FEATURES", "GLOBAL_FEATURES", "NODE_FEATURES", "batch_graphs",
           "graph_from_observation", "knn_count", "knn_indices", "num_edges", "num_nodes"]
