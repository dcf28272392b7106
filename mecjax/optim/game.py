"""Non-cooperative offloading dynamics: greedy sequential choice and best response.

Each device minimises its *own* weighted cost (eq. 16) given the others'
choices. ``best_response`` is the finite-improvement dynamics of Chen et al.
(2015, IEEE/ACM ToN): devices revise in turn to a strictly better option until
no device can improve alone (a pure Nash equilibrium) or a round limit is hit.

Under equal shares (the default) a device's own cost depends on the others only
through the number of devices on each server, so both dynamics keep those counts
[M] and price a device's M+1 options in O(M) (:func:`equal_share_pricer`), not by
evaluating the whole assignment once per option (O(N M) per device, O(N^2 M) per
round); any other ``costs_fn`` or allocation rule takes the general path. Greedy is
one round of the same loop in which every device takes its cheapest option, so a
best response from greedy compiles its per-device pricing once, not twice.
``tests/test_plan_descent.py`` checks that both paths reach the same assignments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.config import as_params
from mecjax.env import env as _env
from mecjax.env import physics
from mecjax.optim import objective
from mecjax.optim.indexing import at, set_at
from mecjax.optim.loops import batched_like

IMPROVE_TOL = 1e-6  # relative improvement a device needs to switch (guarantees termination)


def slot_costs_fn(view, prices, params, allocation_rule="equal"):
    """offload [N] -> [N] each device's weighted cost in this slot (eq. 16); the view's
    candidate terms are computed here, once, not in every call."""
    terms = objective.candidate_terms(view, params, allocation_rule)
    return lambda a: objective.outcome_from_terms(terms, view, a, prices, params,
                                                  allocation_rule).cost


def own_costs(view, offload, i, prices, params, allocation_rule="equal", costs_fn=None):
    """[M+1] the cost device ``i`` (0 <= i < N) would pay for each option, others fixed.

    ``costs_fn`` (offload [N] -> per-device costs [N]) replaces the one-slot
    cost, e.g. by the look-ahead cost over a horizon (:mod:`mecjax.optim.lookahead`).
    """
    p = as_params(params)
    options = jnp.arange(p.n_servers + 1, dtype=jnp.int32)
    offload = jnp.asarray(offload, jnp.int32)
    costs_fn = slot_costs_fn(view, prices, params, allocation_rule) if costs_fn is None else costs_fn

    def cost_if(o):
        return at(costs_fn(set_at(offload, o, i)), i)

    return jax.vmap(cost_if)(options)


@struct.dataclass
class EqualSharePricer:
    """Each device's own cost of each option under equal shares, from the number of
    devices on each server (:func:`equal_share_pricer`)."""

    view: object
    prices: jax.Array
    terms: objective.CandidateTerms
    forced: jax.Array     # [N] bool: the battery cannot pay local execution
    params: object = struct.field(pytree_node=False)

    def executed(self, offload):
        """[N] the server each device's choice runs on (an empty battery forces option 0
        to the best observed server, as the environment does)."""
        return _env.force_to_best(offload, self.forced, self.terms.best_server)

    def counts(self, executed):
        """[M] int32 devices executing on each server."""
        return physics.per_server_sum(executed, jnp.ones(executed.shape, jnp.int32),
                                      self.params.n_servers)

    def moved(self, counts, old, new):
        """[M] ``counts`` after one device moves from executed server ``old`` to ``new``
        (0: local)."""
        servers = jnp.arange(1, self.params.n_servers + 1, dtype=jnp.int32)
        return (counts - (servers == old).astype(counts.dtype)
                + (servers == new).astype(counts.dtype))

    def option_costs(self, i, counts, current):
        """``(costs [M+1], executed [M+1])``: device ``i``'s own cost of each option and
        the server each runs on, the others' executed ``counts`` [M] including device i at
        its ``current`` executed server (0: local). The same arithmetic as
        :func:`mecjax.optim.objective.outcome_from_terms` for that device."""
        p, v, t = self.params, self.view, self.terms
        m = p.n_servers
        others = self.moved(counts, current, 0)                                   # [M]
        options = jnp.arange(m + 1, dtype=jnp.int32)
        run_on = jnp.where(options > 0, options,
                           jnp.where(at(self.forced, i), at(t.best_server, i), 0))  # [M+1]
        n = physics.per_device_of_server(run_on, others).astype(jnp.float32) + 1.0
        share = jnp.where(run_on > 0, 1.0 / n, 0.0)
        full_rate = physics.gain_of_server(run_on, jnp.broadcast_to(at(t.full_rate, i),
                                                                    (m + 1, m)))
        rate = jnp.maximum(jnp.where(run_on > 0, share, 1.0) * full_rate, physics.MIN_RATE_BPS)
        one = lambda x: jnp.broadcast_to(at(x, i), (m + 1,))  # noqa: E731
        out = _env.outcome_at_rate(run_on, rate, share, one(t.local_energy), one(v.task_bits),
                                   one(v.task_cycles), one(v.cpu_freq), one(v.tx_power),
                                   one(v.battery), v.backlog, self.prices, p,
                                   one(v.device_backlog))
        return out.cost, run_on


def equal_share_pricer(view, prices, params) -> EqualSharePricer:
    """The :class:`EqualSharePricer` of ``view`` at ``prices`` [M]: the view's candidate
    terms computed once."""
    p = as_params(params)
    terms = objective.candidate_terms(view, p, "equal")
    return EqualSharePricer(view=view, prices=jnp.asarray(prices, jnp.float32), terms=terms,
                            forced=view.battery < terms.local_energy, params=p)


def _counted_round(pricer: EqualSharePricer, order):
    """``one_round(a, force) -> (a, changed)`` of best response under equal shares, the
    server counts carried, devices revising in ``order``; ``force``: every device takes
    its cheapest option (greedy's pass)."""
    def revise(carry, i):
        a, run, counts, changed, force = carry
        here, now = at(run, i), at(a, i)
        costs, run_on = pricer.option_costs(i, counts, here)
        best = jnp.argmin(costs).astype(jnp.int32)
        better = force | (at(costs, best) < at(costs, now) * (1 - IMPROVE_TOL))
        choice = jnp.where(better, best, now)
        new = at(run_on, choice)
        counts = pricer.moved(counts, here, new)
        return (set_at(a, choice, i), set_at(run, new, i), counts, changed | better,
                force), None

    def one_round(a, force):
        run = pricer.executed(a)
        carry = batched_like((a, run, pricer.counts(run), False, force), pricer.terms.local_energy)
        (a, _, _, changed, _), _ = jax.lax.scan(revise, carry, order)
        return a, changed

    return one_round


def _general_round(view, prices, params, allocation_rule, costs_fn, order):
    """:func:`_counted_round` with each option priced by ``costs_fn`` on the whole
    assignment (:func:`own_costs`)."""
    def revise(carry, i):
        a, changed, force = carry
        costs = own_costs(view, a, i, prices, params, allocation_rule, costs_fn)
        best = jnp.argmin(costs).astype(jnp.int32)
        now = at(a, i)
        better = force | (at(costs, best) < at(costs, now) * (1 - IMPROVE_TOL))
        return (set_at(a, jnp.where(better, best, now), i), changed | better, force), None

    def one_round(a, force):
        (a, changed, _), _ = jax.lax.scan(
            revise, batched_like((a, False, force), view.task_cycles), order)
        return a, changed

    return one_round


def _dynamics(view, prices, params, allocation_rule, costs_fn, init, max_rounds: int,
              order=None):
    """``(a, converged, rounds)`` of best response from ``init``, devices revising in
    ``order`` (default: index order); ``init=None``: from all-local with greedy's pass
    as an extra first round of the same loop, so a program holds one copy of the
    per-device pricing (the bulk of it), not two (``max_rounds=0``: greedy alone).
    Under equal shares and the slot's own cost the counted path, else the general one."""
    p = as_params(params)
    order = jnp.arange(p.n_devices) if order is None else order
    if costs_fn is None and allocation_rule == "equal":
        one_round = _counted_round(equal_share_pricer(view, prices, p), order)
    else:
        if costs_fn is None:   # built once, outside the loops
            costs_fn = slot_costs_fn(view, prices, params, allocation_rule)
        one_round = _general_round(view, prices, params, allocation_rule, costs_fn, order)
    a0 = jnp.zeros((p.n_devices,), jnp.int32) if init is None else init.astype(jnp.int32)
    return _rounds(one_round, a0, max_rounds, greedy_first=init is None, ref=view.task_cycles)


def _rounds(one_round, a0, max_rounds: int, greedy_first: bool = False, ref=None):
    """``(a, converged, rounds)``: ``one_round`` ((a, force) -> (a, changed)) repeated
    from ``a0`` until a round changes nothing or ``max_rounds`` rounds ran.

    ``greedy_first``: one extra round before them with ``force`` true (every device takes
    its cheapest option: greedy's pass), after which the loop always goes on; ``rounds``
    does not count it. ``ref``: an array of the instance (:func:`mecjax.optim.loops.batched_like`)."""
    if greedy_first and max_rounds == 0:
        # greedy alone: the forced round and nothing after it, without a loop around it (a
        # loop under vmap is batched until its carry's batching settles: more to trace)
        a, _ = one_round(a0, True)
        return a, jnp.bool_(False), jnp.int32(0)

    def step(state):
        a, _, rounds = state
        force = rounds < 0
        a, changed = one_round(a, force)
        return a, changed | force, rounds + 1

    def keep_going(state):
        _, changed, rounds = state
        return changed & (rounds < max_rounds)

    init = (a0, True, -1 if greedy_first else 0)
    a, changed, rounds = jax.lax.while_loop(
        keep_going, step, init if ref is None else batched_like(init, ref))
    return a, ~changed, rounds


def greedy(view, prices, params, allocation_rule="equal", order=None, costs_fn=None):
    """[N] devices in turn (index order, or ``order``) pick their cheapest option
    given the choices made before them; devices not yet decided compute locally.
    ``costs_fn``: as in :func:`own_costs`."""
    return _dynamics(view, prices, params, allocation_rule, costs_fn, None, 0, order)[0]


def best_response(view, prices, params, init=None, max_rounds: int = 20,
                  allocation_rule="equal", costs_fn=None):
    """Round-robin best-response dynamics from ``init`` (default: greedy).

    Returns ``(offload [N], converged, rounds)``; converged means a whole round
    passed in which no device could lower its own cost by more than
    IMPROVE_TOL (relative): an (epsilon-)Nash equilibrium. ``costs_fn``: each
    device's own cost of a joint assignment, as in :func:`own_costs` (default:
    this slot's weighted cost).
    """
    return _dynamics(view, prices, params, allocation_rule, costs_fn, init, max_rounds)
