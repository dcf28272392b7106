"""Decision checking: eager errors, jit-time repair and flags, sanitize_decision
(mecjax.env.env; docs/model.md: "it never produces NaN")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax.env import (Decision, check_decision, evaluate, observe, reset, sanitize_decision,
                        step)

S = mecjax.Scenario(n_devices=6)          # N = 6, M = 3
N, M = S.n_devices, S.n_servers
KEY = jax.random.key(1)
STATE = reset(jax.random.key(0), S)[1]

# Built once per module: every call below with the same pytree structure reuses them.
_jstep = jax.jit(step)
_jevaluate = jax.jit(evaluate)
_jsanitize = jax.jit(sanitize_decision)

FLAGS = ("offload_invalid", "prices_invalid", "bandwidth_share_invalid", "cpu_share_invalid")
FLAG_OF = {"offload": "offload_invalid", "prices": "prices_invalid",
           "bandwidth_share": "bandwidth_share_invalid", "cpu_share": "cpu_share_invalid"}

OFFLOAD = np.array([0, 1, 2, 3, 1, 2], np.int32)       # servers 1 and 2 have two devices
PRICES = np.array([0.5, 1.0, 1.5], np.float32)
# Valid shares: per server they sum to exactly 1 (bandwidth) or less (cpu).
BW = np.array([0.0, 0.5, 0.4, 1.0, 0.5, 0.6], np.float32)
CPU = np.array([0.0, 0.3, 0.5, 0.9, 0.7, 0.25], np.float32)


def decision(offload=OFFLOAD, prices=PRICES, bw=None, cpu=None):
    return Decision(offload=jnp.asarray(offload), prices=jnp.asarray(prices),
                    bandwidth_share=None if bw is None else jnp.asarray(bw, jnp.float32),
                    cpu_share=None if cpu is None else jnp.asarray(cpu, jnp.float32))


def _with(arr, i, v):
    a = np.array(arr, copy=True)
    a[i] = v
    return a


def _share_cases(kind):
    base = BW if kind == "bandwidth_share" else CPU
    key = "bw" if kind == "bandwidth_share" else "cpu"
    return [
        (f"{key}_negative", kind, {key: _with(base, 1, -0.1)}),
        (f"{key}_negative_local", kind, {key: _with(base, 0, -0.1)}),
        (f"{key}_above_one", kind, {key: _with(base, 3, 1.5)}),
        (f"{key}_nan", kind, {key: _with(base, 2, np.nan)}),
        (f"{key}_inf", kind, {key: _with(base, 3, np.inf)}),
        (f"{key}_all_nan", kind, {key: np.full(N, np.nan, np.float32)}),
        (f"{key}_zero_for_offloader", kind, {key: _with(base, 4, 0.0)}),
        (f"{key}_server_sum_above_one", kind, {key: _with(_with(base, 1, 0.8), 4, 0.8)}),
    ]


# (id, offending Decision field, decision kwargs); every case is wrong in one field only.
MALFORMED = [
    ("action_minus_one", "offload", {"offload": _with(OFFLOAD, 0, -1)}),
    ("action_m_plus_one", "offload", {"offload": _with(OFFLOAD, 5, M + 1)}),
    ("action_far_out", "offload", {"offload": np.array([-7, 9, 0, 1, 2, 3], np.int32)}),
    ("price_negative", "prices", {"prices": _with(PRICES, 0, -0.1)}),
    ("price_nan", "prices", {"prices": _with(PRICES, 1, np.nan)}),
    ("price_above_max", "prices", {"prices": _with(PRICES, 2, S.price_max + 0.5)}),
    ("price_plus_inf", "prices", {"prices": np.full(M, np.inf, np.float32)}),
    ("price_minus_inf", "prices", {"prices": _with(PRICES, 0, -np.inf)}),
    ("price_all_nan", "prices", {"prices": np.full(M, np.nan, np.float32)}),
    # Shares are valid in the other field so that only the named one is flagged.
    *[(i, f, {"cpu": CPU, **kw}) for i, f, kw in _share_cases("bandwidth_share")],
    *[(i, f, {"bw": BW, **kw}) for i, f, kw in _share_cases("cpu_share")],
]
MALFORMED_IDS = [c[0] for c in MALFORMED]

# Static errors: shape and dtype. (id, field, decision)
STATIC_BAD = [
    ("offload_short", "offload",
     Decision(offload=jnp.zeros(N - 1, jnp.int32), prices=jnp.asarray(PRICES))),
    ("offload_2d", "offload",
     Decision(offload=jnp.zeros((1, N), jnp.int32), prices=jnp.asarray(PRICES))),
    ("offload_float", "offload",
     Decision(offload=jnp.asarray(OFFLOAD, jnp.float32), prices=jnp.asarray(PRICES))),
    ("prices_long", "prices",
     Decision(offload=jnp.asarray(OFFLOAD), prices=jnp.ones(M + 1, jnp.float32))),
    ("prices_scalar", "prices",
     Decision(offload=jnp.asarray(OFFLOAD), prices=jnp.float32(0.5))),
    ("bw_short", "bandwidth_share",
     Decision(offload=jnp.asarray(OFFLOAD), prices=jnp.asarray(PRICES),
              bandwidth_share=jnp.full(N - 1, 0.1))),
    ("cpu_long", "cpu_share",
     Decision(offload=jnp.asarray(OFFLOAD), prices=jnp.asarray(PRICES),
              cpu_share=jnp.full(N + 1, 0.1))),
]
STATIC_IDS = [c[0] for c in STATIC_BAD]

VALID = [
    ("no_shares", {}),
    ("bw_only", {"bw": BW}),
    ("cpu_only", {"cpu": CPU}),
    ("both_shares", {"bw": BW, "cpu": CPU}),
    ("all_local", {"offload": np.zeros(N, np.int32), "bw": np.zeros(N), "cpu": np.zeros(N)}),
    # Six devices on one server with 1/6 each: the float32 sum may be 1 + ulp.
    ("all_on_one_server", {"offload": np.full(N, 2, np.int32),
                           "bw": np.full(N, 1 / 6, np.float32),
                           "cpu": np.full(N, 1 / 6, np.float32)}),
    ("price_bounds", {"prices": np.array([S.price_min, S.price_max, S.price_init],
                                         np.float32)}),
    ("local_devices_with_share", {"bw": _with(BW, 0, 0.7), "cpu": _with(CPU, 0, 1.0)}),
]
VALID_IDS = [c[0] for c in VALID]


def _finite_float_leaves(tree):
    bad = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad.append(jax.tree_util.keystr(path))
    return bad


# --------------------------------------------------------------------------
# Eager: errors naming the field
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case_id, field, kw", MALFORMED, ids=MALFORMED_IDS)
def test_eager_step_raises_naming_field(case_id, field, kw):
    with pytest.raises(ValueError) as ei:
        step(KEY, STATE, decision(**kw), S)
    msg = str(ei.value)
    assert f"Decision.{field}" in msg, msg
    for other in FLAG_OF:
        if other != field:
            assert f"Decision.{other}" not in msg, msg


@pytest.mark.parametrize("case_id, field, kw", MALFORMED, ids=MALFORMED_IDS)
def test_eager_evaluate_raises_naming_field(case_id, field, kw):
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        evaluate(STATE, decision(**kw), S)


@pytest.mark.parametrize("case_id, field, kw", MALFORMED[::4], ids=MALFORMED_IDS[::4])
def test_eager_raises_with_params_and_observation(case_id, field, kw):
    """The same checks with an EnvParams and with an Observation (causal view)."""
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        step(KEY, STATE, decision(**kw), S.params())
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        evaluate(observe(STATE), decision(**kw), S.params())
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        check_decision(decision(**kw), S)


def test_eager_messages_say_what_is_allowed():
    with pytest.raises(ValueError, match=r"0\.\.3"):
        step(KEY, STATE, decision(offload=_with(OFFLOAD, 0, 4)), S)
    with pytest.raises(ValueError, match=r"\[price_min, price_max\] = \[0\.0, 2\.0\]"):
        step(KEY, STATE, decision(prices=_with(PRICES, 0, -1.0)), S)
    with pytest.raises(ValueError, match="server 1"):
        step(KEY, STATE, decision(bw=_with(_with(BW, 1, 0.8), 4, 0.8)), S)
    with pytest.raises(ValueError, match=r"offloading devices \[4\]"):
        step(KEY, STATE, decision(cpu=_with(CPU, 4, 0.0)), S)


@pytest.mark.parametrize("case_id, field, bad", STATIC_BAD, ids=STATIC_IDS)
def test_eager_static_errors(case_id, field, bad):
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        step(KEY, STATE, bad, S)
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        evaluate(STATE, bad, S)


def test_not_a_decision_is_a_type_error():
    with pytest.raises(TypeError, match="Decision"):
        step(KEY, STATE, {"offload": OFFLOAD, "prices": PRICES}, S)


@pytest.mark.parametrize("case_id, kw", VALID, ids=VALID_IDS)
def test_eager_valid_decision_does_not_raise(case_id, kw):
    d = decision(**kw)
    check_decision(d, S)
    out = evaluate(STATE, d, S)
    _, state, reward, done, info = step(KEY, STATE, d, S)
    assert int(state.t) == 1 and not bool(done)
    assert not bool(info["invalid_decision"])
    assert not _finite_float_leaves((out, state, reward, info))
    # Eager and jitted step agree on a valid decision.
    _, _, jreward, _, _ = _jstep(KEY, STATE, d, S)
    np.testing.assert_allclose(float(reward), float(jreward), rtol=1e-5)


# --------------------------------------------------------------------------
# Under jit: no error, repaired, flagged, finite
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case_id, field, kw", MALFORMED, ids=MALFORMED_IDS)
def test_jit_step_flags_and_stays_finite(case_id, field, kw):
    d = decision(**kw)
    obs, state, reward, done, info = _jstep(KEY, STATE, d, S)
    assert bool(info["invalid_decision"])
    for flag in FLAGS:
        assert bool(info[flag]) == (flag == FLAG_OF[field]), (flag, dict(
            (f, bool(info[f])) for f in FLAGS))
    assert not _finite_float_leaves((obs, state, reward, info))
    assert int(state.t) == 1
    # Executed actions and posted prices are the repaired ones.
    off = np.asarray(info["offload"])
    assert off.min() >= 0 and off.max() <= M
    prices = np.asarray(state.prices)
    assert np.all((prices >= S.price_min) & (prices <= S.price_max))
    # The step is that of the sanitised decision.
    repaired, _ = _jsanitize(d, S)
    _, _, r2, _, info2 = _jstep(KEY, STATE, repaired, S)
    np.testing.assert_allclose(float(reward), float(r2), rtol=1e-6)
    assert not bool(info2["invalid_decision"])


@pytest.mark.parametrize("case_id, field, kw", MALFORMED, ids=MALFORMED_IDS)
def test_jit_evaluate_does_not_raise_and_is_finite(case_id, field, kw):
    out = _jevaluate(STATE, decision(**kw), S)
    assert out.latency.shape == (N,)
    assert not _finite_float_leaves(out)
    assert np.all(np.asarray(out.latency) > 0)


def test_jit_everything_wrong_at_once_is_finite_and_flags_all():
    d = decision(offload=np.array([-1, 4, 1, 1, 2, 3], np.int32),
                 prices=np.array([np.nan, np.inf, -np.inf], np.float32),
                 bw=np.full(N, np.nan, np.float32),
                 cpu=np.array([np.inf, -1.0, 5.0, 0.0, np.nan, 2.0], np.float32))
    obs, state, reward, done, info = _jstep(KEY, STATE, d, S)
    assert all(bool(info[f]) for f in FLAGS + ("invalid_decision",))
    assert not _finite_float_leaves((obs, state, reward, info))
    # The repaired state can be stepped again.
    _, state2, reward2, _, info2 = _jstep(KEY, state, d, S)
    assert int(state2.t) == 2
    assert not _finite_float_leaves((state2, reward2, info2))


@pytest.mark.parametrize("case_id, kw", VALID, ids=VALID_IDS)
def test_jit_valid_decision_has_no_flags(case_id, kw):
    obs, state, reward, done, info = _jstep(KEY, STATE, decision(**kw), S)
    for flag in FLAGS + ("invalid_decision",):
        assert not bool(info[flag]), flag
    assert not _finite_float_leaves((obs, state, reward, info))
    np.testing.assert_array_equal(np.asarray(state.prices),
                                  np.asarray(kw.get("prices", PRICES), np.float32))


@pytest.mark.parametrize("case_id, field, bad", STATIC_BAD, ids=STATIC_IDS)
def test_jit_static_errors_still_raise(case_id, field, bad):
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        _jstep(KEY, STATE, bad, S)
    with pytest.raises(ValueError, match=f"Decision\\.{field}"):
        _jsanitize(bad, S)


# --------------------------------------------------------------------------
# sanitize_decision
# --------------------------------------------------------------------------


def _check_repaired(orig_off, valid):
    off = np.asarray(valid.offload)
    assert np.issubdtype(off.dtype, np.integer)
    np.testing.assert_array_equal(off, np.clip(orig_off, 0, M))
    prices = np.asarray(valid.prices)
    assert np.all(np.isfinite(prices))
    assert np.all((prices >= S.price_min) & (prices <= S.price_max))
    for share in (valid.bandwidth_share, valid.cpu_share):
        s = np.asarray(share)
        assert np.all(np.isfinite(s)) and np.all(s >= 0) and np.all(s <= 1)
        assert np.all(s[off > 0] > 0), (off, s)       # offloaders get a positive share
        assert np.all(s[off == 0] == 0), (off, s)     # local devices get none
        for j in range(1, M + 1):
            assert s[off == j].sum() <= 1 + 1e-6, (j, off, s)


def test_sanitize_repairs_a_hand_made_decision():
    orig = np.array([-3, 0, 7, 2, 2, 1], np.int32)
    d = decision(offload=orig, prices=np.array([-1.0, np.nan, 9.0], np.float32),
                 bw=np.array([0.9, np.nan, 0.9, 0.9, 0.8, -0.2], np.float32),
                 cpu=np.array([0.3, 0.2, np.inf, 0.0, 0.5, 0.1], np.float32))
    valid, flags = sanitize_decision(d, S)
    _check_repaired(orig, valid)
    np.testing.assert_array_equal(np.asarray(valid.offload), [0, 0, 3, 2, 2, 1])
    np.testing.assert_allclose(np.asarray(valid.prices), [S.price_min, S.price_min, S.price_max])
    assert all(bool(flags[f]) for f in FLAGS + ("invalid_decision",))
    bw = np.asarray(valid.bandwidth_share)
    # Server 2: 0.9 + 0.8 scaled back to sum exactly 1, proportions kept.
    np.testing.assert_allclose(bw[[3, 4]], np.array([0.9, 0.8]) / 1.7, rtol=1e-6)
    # Server 1 has one device whose share was negative: it gets its equal share, 1.
    np.testing.assert_allclose(bw[5], 1.0)
    cpu = np.asarray(valid.cpu_share)
    # Server 2: device 3 had share 0 -> equal share 1/2, then 0.5 + 0.5 = 1 (no scaling).
    np.testing.assert_allclose(cpu[[3, 4]], [0.5, 0.5], rtol=1e-6)
    assert cpu[2] > 0  # inf on an offloader: repaired to a positive share


@pytest.mark.parametrize("case_id, kw", VALID, ids=VALID_IDS)
def test_sanitize_leaves_valid_decisions_alone(case_id, kw):
    d = decision(**kw)
    valid, flags = _jsanitize(d, S)
    assert not any(bool(flags[f]) for f in FLAGS + ("invalid_decision",))
    np.testing.assert_array_equal(np.asarray(valid.offload), np.asarray(d.offload))
    np.testing.assert_array_equal(np.asarray(valid.prices), np.asarray(d.prices))
    for name in ("bandwidth_share", "cpu_share"):
        given, got = getattr(d, name), getattr(valid, name)
        if given is None:
            assert got is None
            continue
        g = np.where(np.asarray(d.offload) > 0, np.asarray(given), 0.0)
        np.testing.assert_allclose(np.asarray(got), g, rtol=1e-6, atol=0)


def test_sanitize_random_decisions():
    """Many random, mostly malformed decisions through one vmapped, jitted sanitize."""
    rng = np.random.default_rng(0)
    b = 512
    off = rng.integers(-2, M + 3, size=(b, N)).astype(np.int32)
    prices = rng.uniform(-1.0, 3.0, size=(b, M)).astype(np.float32)
    prices[rng.random((b, M)) < 0.1] = np.nan
    prices[rng.random((b, M)) < 0.05] = np.inf

    def shares():
        s = rng.uniform(-0.3, 1.3, size=(b, N)).astype(np.float32)
        s[rng.random((b, N)) < 0.2] = 0.0
        s[rng.random((b, N)) < 0.05] = np.nan
        s[rng.random((b, N)) < 0.03] = -np.inf
        return s

    bw, cpu = shares(), shares()
    d = Decision(offload=jnp.asarray(off), prices=jnp.asarray(prices),
                 bandwidth_share=jnp.asarray(bw), cpu_share=jnp.asarray(cpu))
    valid, flags = jax.jit(jax.vmap(lambda x: sanitize_decision(x, S)))(d)
    valid, flags = jax.tree.map(np.asarray, (valid, flags))
    assert flags["invalid_decision"].mean() > 0.9
    for i in range(b):
        _check_repaired(off[i], jax.tree.map(lambda x: x[i], valid))
        # In-range prices are kept as they are.
        ok = np.isfinite(prices[i]) & (prices[i] >= S.price_min) & (prices[i] <= S.price_max)
        np.testing.assert_array_equal(valid.prices[i][ok], prices[i][ok])
        # The flags agree with the eager checker.
        try:
            check_decision(Decision(offload=off[i], prices=prices[i], bandwidth_share=bw[i],
                                    cpu_share=cpu[i]), S)
            eager_ok = True
        except ValueError:
            eager_ok = False
        assert eager_ok == (not bool(flags["invalid_decision"][i]))


def test_eager_accepts_float64_prices_at_scenario_bounds():
    s = mecjax.Scenario(n_devices=N, price_min=0.1, price_max=1.3, price_init=0.5)
    state = reset(jax.random.key(0), s)[1]
    d = Decision(offload=jnp.asarray(OFFLOAD),
                 prices=np.array([s.price_min, s.price_max, s.price_init]))  # float64
    _, _, _, _, info = _jstep(KEY, state, d, s)
    assert not bool(info["prices_invalid"])          # jit: fine
    evaluate(state, d, s)                             # eager: accepted too
