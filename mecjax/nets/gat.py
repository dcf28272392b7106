"""Multi-head graph attention network over the MEC graph (paper section 3.1,
eqs. 10-12), in Flax linen on a ``jraph.GraphsTuple``.

Input graphs are those of :func:`mecjax.env.graph.graph_from_observation`:
N device nodes then M server nodes, node features ``[E, D, C, h, f]`` of
eq. 10 plus a node-type one-hot, directed device <-> server edges and
device -> device k-nearest-neighbour edges with ``[channel, distance]``
features. The network also accepts any other GraphsTuple, including a batch
of graphs (``jraph.batch`` / :func:`mecjax.env.graph.batch_graphs`): a batch
is one disconnected graph, so per-graph results are unchanged.

One layer (:class:`GATLayer`), per head ``k`` with its own ``W^k`` and
``a^k = [a_dst^k || a_src^k]``, for a receiving node ``i`` and its incoming
neighbours ``j in N_i`` (edges ``j -> i``, plus a self-loop ``i -> i`` as in
Velickovic et al. 2018, so a node keeps its own features)::

    e_ij     = LeakyReLU(a^T [W x_i || W x_j] + a_e^T W_e x_ij)   (eq. 11 logit)
             = LeakyReLU(a_dst . W x_i + a_src . W x_j + u . x_ij)
    alpha_ij = softmax over j in N_i of e_ij                       (eq. 11)
    h'_i     = sigma(sum_{j in N_i} alpha_ij W x_j)                (eq. 12)

The edge term ``u . x_ij`` (``a_e^T W_e`` folded into one linear map ``u``
per head) lets the attention see the observed channel and distance of each
link (``use_edge_features``; 0 on self-loops); it enters the attention
logits only, the messages are ``W x_j`` exactly as in eq. 12. The softmax is
``jraph.segment_softmax`` over the receivers and the aggregation
``jax.ops.segment_sum``. Hidden layers concatenate the heads and apply
``sigma`` = ELU; the last layer averages its heads and applies no
non-linearity (the heads that read the embeddings add their own).

Padding: the graphs of this project have static sizes and need none, but a
graph padded with ``jraph.pad_with_graphs`` can be used by passing the masks
of :func:`padding_masks` (computed from ``n_node`` / ``n_edge``): masked edges
get attention weight exactly 0, padding nodes receive nothing and output 0,
and the outputs of real nodes are those of the unpadded graph.

Shapes below: ``V`` nodes, ``E`` edges of the input graph, ``H`` heads,
``F`` features per head.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

_MASKED_LOGIT = -1e9


def padding_masks(graph: jraph.GraphsTuple, n_padding_graphs: int = 1):
    """``(node_mask [V], edge_mask [E])`` bool for a graph padded by
    ``jraph.pad_with_graphs``: the last ``n_padding_graphs`` graphs of the
    batch (the padding graph and any empty graphs it added; their nodes and
    edges come last) are padding.

    Computed from the node and edge counts only (jittable; the number of
    padding graphs is static).
    """
    if n_padding_graphs < 0:
        raise ValueError(f"n_padding_graphs={n_padding_graphs} must be >= 0")
    n_graphs = graph.n_node.shape[0]
    real = n_graphs - n_padding_graphs
    n_real_nodes = jnp.sum(graph.n_node[:real])
    n_real_edges = jnp.sum(graph.n_edge[:real])
    v, e = graph.nodes.shape[0], graph.senders.shape[0]
    return jnp.arange(v) < n_real_nodes, jnp.arange(e) < n_real_edges


class GATLayer(nn.Module):
    """One multi-head graph attention layer (eqs. 11-12).

    ``__call__(nodes [V, Din], edges [E, De] | None, senders [E], receivers [E],
    node_mask [V] | None, edge_mask [E] | None) -> (h [V, H*F] or [V, F],
    alpha [E + V, H])``: the new node features (heads concatenated if
    ``concat``, else averaged) and the attention weights of every edge,
    the V self-loops appended after the E graph edges (``add_self_loops``).
    For each receiving node the weights of its incoming edges sum to 1 per
    head (0 for a node whose incoming edges are all masked).
    """

    features: int                 # F, per head
    heads: int = 4                # H
    concat: bool = True           # True: [V, H*F] (hidden layer); False: mean over heads
    activation: bool = True       # apply sigma = ELU (eq. 12)
    negative_slope: float = 0.2   # LeakyReLU of eq. 11
    use_edge_features: bool = True
    add_self_loops: bool = True

    @nn.compact
    def __call__(self, nodes, edges, senders, receivers, node_mask=None, edge_mask=None):
        v = nodes.shape[0]
        h, f = self.heads, self.features
        wx = nn.Dense(h * f, use_bias=False, name="W")(nodes).reshape(v, h, f)      # [V, H, F]
        glorot = nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2)
        a_src = self.param("a_src", glorot, (h, f))
        a_dst = self.param("a_dst", glorot, (h, f))

        if edge_mask is None and node_mask is not None:
            edge_mask = node_mask[senders] & node_mask[receivers]
        if self.add_self_loops:
            loops = jnp.arange(v, dtype=senders.dtype)
            senders = jnp.concatenate([senders, loops])
            receivers = jnp.concatenate([receivers, loops])
            if edges is not None:
                edges = jnp.concatenate([edges, jnp.zeros((v,) + edges.shape[1:], edges.dtype)])
            if edge_mask is not None:
                loop_mask = jnp.ones((v,), bool) if node_mask is None else node_mask
                edge_mask = jnp.concatenate([edge_mask, loop_mask])

        # eq. 11: a^T [W x_i || W x_j] = a_dst . W x_i + a_src . W x_j  (i receives from j)
        s_dst = jnp.sum(wx * a_dst, -1)                                                # [V, H]
        s_src = jnp.sum(wx * a_src, -1)                                                # [V, H]
        logits = s_dst[receivers] + s_src[senders]                                     # [E', H]
        if self.use_edge_features and edges is not None:
            logits = logits + nn.Dense(h, use_bias=False, name="edge_attention")(edges)
        logits = nn.leaky_relu(logits, self.negative_slope)
        if edge_mask is not None:
            logits = jnp.where(edge_mask[:, None], logits, _MASKED_LOGIT)
        alpha = jraph.segment_softmax(logits, receivers, num_segments=v)              # [E', H]
        if edge_mask is not None:
            alpha = jnp.where(edge_mask[:, None], alpha, 0.0)

        # eq. 12: h'_i = sigma(sum_j alpha_ij W x_j)
        out = jax.ops.segment_sum(alpha[..., None] * wx[senders], receivers, num_segments=v)
        out = out.reshape(v, h * f) if self.concat else jnp.mean(out, axis=1)
        if self.activation:
            out = nn.elu(out)
        if node_mask is not None:
            out = jnp.where(node_mask[:, None], out, 0.0)
        return out, alpha


class GAT(nn.Module):
    """A stack of :class:`GATLayer` (default 2 layers): hidden layers with
    ``heads`` heads of ``hidden`` features, concatenated, ELU; the last
    layer with ``out_heads`` heads of ``out_features``, averaged, linear.

    ``__call__(graph, node_mask=None, edge_mask=None) -> [V, out_features]``
    node embeddings; with ``return_attention=True`` also the list of each
    layer's attention weights ``[E + V, heads]`` (self-loops last).
    """

    hidden: Sequence[int] = (16,)  # F per head of each hidden layer
    heads: int = 4
    out_features: int = 32
    out_heads: int = 4
    negative_slope: float = 0.2
    use_edge_features: bool = True

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, node_mask=None, edge_mask=None,
                 return_attention: bool = False):
        x = graph.nodes
        attentions = []
        for i, f in enumerate(self.hidden):
            x, a = GATLayer(f, self.heads, concat=True, activation=True,
                            negative_slope=self.negative_slope,
                            use_edge_features=self.use_edge_features, name=f"layer_{i}")(
                x, graph.edges, graph.senders, graph.receivers, node_mask, edge_mask)
            attentions.append(a)
        x, a = GATLayer(self.out_features, self.out_heads, concat=False, activation=False,
                        negative_slope=self.negative_slope,
                        use_edge_features=self.use_edge_features,
                        name=f"layer_{len(self.hidden)}")(
            x, graph.edges, graph.senders, graph.receivers, node_mask, edge_mask)
        attentions.append(a)
        return (x, attentions) if return_attention else x


class GATMECNet(nn.Module):
    """GAT-MEC's network for ONE instance (vmap it over instances).

    ``__call__(graph, device_features [N, Fd]) -> q [N, M + 1]``.

    The GAT (eqs. 11-12; ``gat_hidden`` features per head of each hidden
    layer, ``heads`` heads, ``embed`` output features averaged over
    ``embed_heads`` heads) embeds every node of the instance's graph; each
    device's embedding, its own features (the state of eq. 1,
    :func:`mecjax.env.features.device_features`: battery, task, CPU, power,
    channel to every server, the servers' prices and backlogs) and the
    graph's globals go through a per-device MLP (``head_hidden`` widths,
    ReLU) shared by all devices that scores the M + 1 options of eq. 13
    (local, server 1..M): ``q[i, o]`` estimates how much option o would add to
    the slot's system cost (eq. 13) in units of the learner's ``cost_scale``;
    the device takes the lowest. The first N nodes of ``graph`` must be the
    devices.
    """

    n_servers: int
    gat_hidden: Sequence[int] = (16,)
    heads: int = 4
    embed: int = 32
    embed_heads: int = 4
    head_hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, device_features):
        n = device_features.shape[0]
        h = gat_encoder(self, name="gat")(graph)
        g = jnp.broadcast_to(graph.globals.reshape(1, -1), (n, graph.globals.size))
        z = jnp.concatenate([h[:n], device_features, g], -1)                          # [N, .]
        for i, width in enumerate(self.head_hidden):
            z = nn.relu(nn.Dense(width, name=f"head_{i}")(z))
        return nn.Dense(self.n_servers + 1, name="head_out")(z)                       # [N, M+1]

    @classmethod
    def from_params(cls, params) -> "GATMECNet":
        """The module whose parameters ``params`` are (sizes read from their shapes),
        so a trained policy can be executed without its training hyper-parameters."""
        gat = params["gat"]
        n_layers = len([k for k in gat if k.startswith("layer_")])
        gat_hidden = tuple(int(gat[f"layer_{i}"]["a_src"].shape[1]) for i in range(n_layers - 1))
        heads = int(gat["layer_0"]["a_src"].shape[0]) if n_layers > 1 else cls.heads
        last = gat[f"layer_{n_layers - 1}"]["a_src"].shape
        n_head = len([k for k in params if k.startswith("head_") and k != "head_out"])
        head_hidden = tuple(int(params[f"head_{i}"]["kernel"].shape[1]) for i in range(n_head))
        return cls(n_servers=int(params["head_out"]["kernel"].shape[1]) - 1,
                   gat_hidden=gat_hidden, heads=heads, embed=int(last[1]),
                   embed_heads=int(last[0]), head_hidden=head_hidden)


def gat_encoder(net: GATMECNet, name: str | None = None) -> GAT:
    """The GAT part of ``net`` alone (its parameters are ``params["gat"]``).
    A function, not a method: flax binds a module built in a method of an
    unbound module to it, and this one must also be usable on its own."""
    return GAT(tuple(net.gat_hidden), net.heads, net.embed, net.embed_heads, name=name)


__all__ = ["GAT", "GATLayer", "GATMECNet", "gat_encoder", "padding_masks"]
