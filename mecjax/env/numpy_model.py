"""A plain NumPy implementation of the same MEC model, vectorized over instances.

It is written separately from the JAX environment, from the model of
``docs/model.md``, and serves two purposes:

* the test oracle: fed the same uniforms, it must reproduce the JAX
  environment's states and outcomes (``tests/test_numpy_oracle.py``);
* the benchmark baseline: ``mecjax bench env`` times it against the JAX step.

State is a dict of arrays with a leading instance axis: ``[B, N]``,
``[B, N, M]``, ``[B, M]``. Noise is a dict of uniforms in (0, 1) with the
same keys as ``mecjax.env.reset_noise`` / ``step_noise`` (plus the batch axis).
"""

from __future__ import annotations

import math

import numpy as np

from mecjax.config import Scenario

RESET_NOISE = ("pos_x", "pos_y", "cpu", "power", "phase", "burst", "fade_prev_1",
               "fade_prev_2", "fade_1", "fade_2", "bits", "cycles", "battery", "deadline")
STEP_NOISE = ("fade_1", "fade_2", "burst", "bits", "cycles", "harvest", "move_step",
              "move_angle", "deadline")


def _shapes(names, s: Scenario, batch: int):
    out = {}
    for name in names:
        if name.startswith("fade"):
            out[name] = (batch, s.n_devices, s.n_servers)
        elif name.startswith("move") and not s.mobility:
            continue
        else:
            out[name] = (batch, s.n_devices)
    return out


def draw_noise(rng: np.random.Generator, names, s: Scenario, batch: int, dtype=np.float32):
    """Uniforms in (0, 1) for ``names`` from a NumPy generator."""
    out = {}
    for name, shape in _shapes(names, s, batch).items():
        u = rng.random(shape, dtype=dtype)
        out[name] = np.where(u > 0, u, np.finfo(dtype).tiny)  # log(0) guard
    return out


def _per_server(value, s: Scenario):
    """[M] a per-server field (a float or a tuple of M)."""
    return np.broadcast_to(np.asarray(value, np.float64), (s.n_servers,))


def _remote(s: Scenario):
    """[M] bool: servers behind a WAN (wan_delay_s > 0)."""
    return _per_server(s.wan_delay_s, s) > 0


def _gain_from_distance(d, s: Scenario):
    """[..., N, M] path gain; a remote server's column is the gain to the device's
    strongest (largest path gain) edge site, through which it reaches the cloud."""
    d_km = np.maximum(d, s.min_distance_m) / 1000.0
    g = 10.0 ** (-(s.pathloss_db_at_1km + s.pathloss_slope_db * np.log10(d_km)) / 10.0)
    remote = _remote(s)
    if remote.any():
        g = np.where(remote, g[..., ~remote].max(-1, keepdims=True), g)
    return g


def _server_positions(s: Scenario, dtype):
    if s.server_xy is not None:
        return np.asarray(s.server_xy, dtype)
    j = np.arange(s.n_servers)
    angle = np.pi / 2 + 2 * np.pi * j / s.n_servers
    r = s.server_radius_m if s.n_servers > 1 else 0.0
    c = s.area_m / 2
    return np.stack([c + r * np.cos(angle), c + r * np.sin(angle)], -1).astype(dtype)


def _distance(pos, servers):
    # pos [B, N, 2], servers [M, 2] -> [B, N, M]
    dx = pos[..., :, None, 0] - servers[None, None, :, 0]
    dy = pos[..., :, None, 1] - servers[None, None, :, 1]
    return np.sqrt(dx * dx + dy * dy)


def _box_muller(u1, u2):
    r = np.sqrt(-np.log(u1))
    return r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)


def _tasks(t, phase, burst, u_bits, u_cycles, s: Scenario):
    load = s.load_mean + s.load_amplitude * np.sin(2 * np.pi * t / s.load_period_slots + phase)
    load = np.clip(load + burst, 0.0, 1.0)
    wb = np.clip(load + s.task_noise * (2 * u_bits - 1), 0.0, 1.0)
    wc = np.clip(load + s.task_noise * (2 * u_cycles - 1), 0.0, 1.0)
    bits = s.task_bits_min + wb * (s.task_bits_max - s.task_bits_min)
    cycles = s.task_cycles_min + wc * (s.task_cycles_max - s.task_cycles_min)
    return bits, cycles


def reset_from_noise(noise, s: Scenario, dtype=np.float64):
    """Initial state of B instances from reset uniforms ``[B, ...]``."""
    nz = {k: np.asarray(v, dtype) for k, v in noise.items()}
    batch = nz["cpu"].shape[0]
    if s.device_xy is None:
        pos = s.area_m * np.stack([nz["pos_x"], nz["pos_y"]], -1)
    else:
        pos = np.broadcast_to(np.asarray(s.device_xy, dtype), (batch, s.n_devices, 2)).copy()
    servers = _server_positions(s, dtype)
    path = _gain_from_distance(_distance(pos, servers), s)
    rho_c = math.sqrt(1 - s.fading_rho**2)
    pre, pim = _box_muller(nz["fade_prev_1"], nz["fade_prev_2"])
    ere, eim = _box_muller(nz["fade_1"], nz["fade_2"])
    gre, gim = s.fading_rho * pre + rho_c * ere, s.fading_rho * pim + rho_c * eim
    phase = 2 * np.pi * nz["phase"]
    burst = math.sqrt(12.0) * s.burst_std * (nz["burst"] - 0.5)
    bits, cycles = _tasks(0, phase, burst, nz["bits"], nz["cycles"], s)
    return {
        "t": np.zeros(batch, np.int64),
        "positions": pos,
        "server_positions": np.broadcast_to(servers, (batch,) + servers.shape).copy(),
        "task_bits": bits,
        "task_cycles": cycles,
        "cpu_freq": s.device_cpu_min_hz + nz["cpu"] * (s.device_cpu_max_hz - s.device_cpu_min_hz),
        "tx_power": s.tx_power_min_w + nz["power"] * (s.tx_power_max_w - s.tx_power_min_w),
        "path_gain": path,
        "fading_re": gre,
        "fading_im": gim,
        "gain": path * (gre**2 + gim**2),
        "gain_observed": path * (pre**2 + pim**2),
        "battery": s.battery_capacity_j * (s.battery_init_min + nz["battery"] * (1 - s.battery_init_min)),
        "backlog": np.zeros((batch, s.n_servers), dtype),
        "prices": np.full((batch, s.n_servers), s.price_init, dtype),
        "load_phase": phase,
        "burst": burst,
        "task_deadline": s.deadline_min_s + nz["deadline"] * (s.deadline_max_s - s.deadline_min_s),
        "device_backlog": np.zeros((batch, s.n_devices), dtype),
    }


def _shares(share, offload, s: Scenario):
    """Equal shares when ``share`` is None; otherwise the given shares, where a
    device forced to offload (no share of its own) takes its equal share and a
    server pushed above 1 in total is scaled back to 1."""
    on = offload[..., None] == np.arange(1, s.n_servers + 1)          # [B, N, M]
    count = on.sum(-2)                                                  # [B, M]
    mine = (on * count[..., None, :]).sum(-1)                           # [B, N]
    equal = np.where(mine > 0, 1.0 / np.maximum(mine, 1), 0.0)
    if share is None:
        return equal
    off = offload > 0
    share = np.where(off, np.where(share > 0, share, equal), 0.0)
    total = (on * (on * share[..., None]).sum(-2)[..., None, :]).sum(-1)
    return np.where(total > 1, share / np.where(total > 1, total, 1), share)


def evaluate(state, offload, prices, s: Scenario, bandwidth_share=None, cpu_share=None,
             true_channel=True):
    """Per-device latency, energy, payment, cost, rate, executed action and failure:
    dict of [B, N]."""
    gain = state["gain"] if true_channel else state["gain_observed"]
    cycles, bits, f = state["task_cycles"], state["task_bits"], state["cpu_freq"]
    local_e = s.kappa * f**2 * cycles
    best = np.argmax(state["gain_observed"], -1) + 1
    offload = np.where((offload == 0) & (state["battery"] < local_e), best, offload)
    on = offload[..., None] == np.arange(1, s.n_servers + 1)
    off = offload > 0
    bw = _shares(bandwidth_share, offload, s)
    cpu = _shares(cpu_share, offload, s)

    def mine(per_server):  # [B, N] the value of each device's server (0 when local)
        return (on * per_server[..., None, :]).sum(-1)

    def per_device(value):  # a per-server field: a float as is, a tuple per device
        return np.where(off, mine(np.asarray(value)), 1.0) if isinstance(value, tuple) else value

    h = (on * gain).sum(-1)
    se = np.log1p(state["tx_power"] * h / s.noise_w) / math.log(2.0)
    rate = np.maximum(np.where(off, bw, 1.0) * per_device(s.bandwidth_hz) * se, 1.0)
    wait = mine(state["backlog"] / _per_server(s.server_cpu_hz, s))
    price = mine(np.asarray(prices))
    t_edge = bits / rate + wait + cycles / (np.where(off, cpu, 1.0) * per_device(s.server_cpu_hz))
    if _remote(s).any():
        t_edge = t_edge + mine(_per_server(s.wan_delay_s, s))
    queued = state["device_backlog"] if s.device_queue else 0.0
    t_local = (queued + cycles) / f
    latency = np.where(off, t_edge, t_local)
    energy = np.where(off, state["tx_power"] * bits / rate, local_e)
    pay = np.where(off, price * cycles * 1e-9, 0.0)
    cost = s.alpha * latency + s.beta * energy + s.gamma * pay
    rate = np.where(off, rate, 0.0)
    failed = np.zeros(offload.shape, bool)
    if s.battery_hard:
        failed = state["battery"] < energy
        local_cost = s.alpha * t_local + s.beta * local_e
        cost = np.where(failed, np.maximum(cost, local_cost) + s.failure_cost, cost)
        energy, pay, rate = (np.where(failed, 0.0, x) for x in (energy, pay, rate))
    return {
        "latency": latency,
        "energy": energy,
        "payment": pay,
        "cost": cost,
        "rate": rate,
        "offload": offload,
        "task_failed": failed,
    }


def slot_metrics(state, out, prices, s: Scenario):
    """Per-instance scalar metrics ``[B]`` (and leader utility ``[B, M]``)."""
    failed = out["task_failed"]
    x = np.where(failed, 0.0, state["task_bits"] / out["latency"])
    n = x.shape[-1]
    queued = state["device_backlog"] if s.device_queue else 0.0
    local = s.alpha * (queued + state["task_cycles"]) / state["cpu_freq"] + \
        s.beta * s.kappa * state["cpu_freq"] ** 2 * state["task_cycles"]
    on = (out["offload"][..., None] == np.arange(1, s.n_servers + 1)) & ~failed[..., None]
    cyc = (on * state["task_cycles"][..., None]).sum(-2)
    cnt = on.sum(-2)
    delay = (on * out["latency"][..., None]).sum(-2) / np.maximum(cnt, 1)
    energy = s.server_kappa * _per_server(s.server_cpu_hz, s) ** 2 * cyc
    revenue = prices * cyc * 1e-9
    return {
        "latency_ms": 1e3 * out["latency"].mean(-1),
        "energy_j": out["energy"].mean(-1),
        "throughput_mbps": 1e-6 * x.mean(-1),
        "fairness": x.sum(-1) ** 2 / (n * (x**2).sum(-1)),
        "utility": 1 - out["cost"].sum(-1) / local.sum(-1),
        "mean_cost": out["cost"].mean(-1),
        "welfare_cost": (out["cost"] - s.gamma * out["payment"]).mean(-1),
        "revenue": revenue.sum(-1),
        "leader_utility": revenue - s.leader_lambda * energy - s.leader_mu * delay,
        "offload_fraction": (out["offload"] > 0).mean(-1),
        "failed": failed.mean(-1),
        "deadline_miss": ((out["latency"] > state["task_deadline"]) | failed).mean(-1),
    }


def step_from_noise(state, offload, prices, noise, s: Scenario, bandwidth_share=None,
                    cpu_share=None):
    """Execute a valid decision and advance one slot; returns (next_state, outcome, metrics)."""
    dtype = state["battery"].dtype
    nz = {k: np.asarray(v, dtype) for k, v in noise.items()}
    prices = np.asarray(prices, dtype)
    out = evaluate(state, offload, prices, s, bandwidth_share, cpu_share)
    met = slot_metrics(state, out, prices, s)
    pos, path = state["positions"], state["path_gain"]
    if s.mobility:
        step = s.mobility_step_m * nz["move_step"]
        ang = 2 * np.pi * nz["move_angle"]
        pos = np.clip(pos + np.stack([step * np.cos(ang), step * np.sin(ang)], -1), 0, s.area_m)
        path = _gain_from_distance(_distance(pos, state["server_positions"][0]), s)
    ere, eim = _box_muller(nz["fade_1"], nz["fade_2"])
    rc = math.sqrt(1 - s.fading_rho**2)
    gre = s.fading_rho * state["fading_re"] + rc * ere
    gim = s.fading_rho * state["fading_im"] + rc * eim
    burst = s.burst_rho * state["burst"] + math.sqrt(1 - s.burst_rho**2) * math.sqrt(12.0) * \
        s.burst_std * (nz["burst"] - 0.5)
    t = state["t"] + 1
    bits, cycles = _tasks(t[:, None], state["load_phase"], burst, nz["bits"], nz["cycles"], s)
    served = (out["offload"][..., None] == np.arange(1, s.n_servers + 1)) & \
        ~out["task_failed"][..., None]
    work = (served * state["task_cycles"][..., None]).sum(-2)
    capacity = _per_server(s.server_cpu_hz, s) * s.slot_s
    dev_q = state["device_backlog"]
    if s.device_queue:   # FIFO at the device: its local work minus what f_i tau clears
        local_work = np.where(out["offload"] == 0, state["task_cycles"], 0.0)
        dev_q = np.maximum(dev_q + local_work - state["cpu_freq"] * s.slot_s, 0.0)
    nxt = dict(state)
    nxt.update(
        t=t,
        positions=pos,
        path_gain=path,
        task_bits=bits,
        task_cycles=cycles,
        fading_re=gre,
        fading_im=gim,
        gain=path * (gre**2 + gim**2),
        gain_observed=state["gain"],
        battery=np.clip(state["battery"] - out["energy"] + nz["harvest"] * s.harvest_max_j,
                        0.0, s.battery_capacity_j),
        backlog=np.maximum(state["backlog"] + work - capacity, 0.0),
        prices=prices,
        burst=burst,
        task_deadline=s.deadline_min_s + nz["deadline"] * (s.deadline_max_s - s.deadline_min_s),
        device_backlog=dev_q,
    )
    return nxt, out, met
