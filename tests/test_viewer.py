"""The viewer (mecjax.render, render_rgb) and ``mecjax rollout-gif``: what is drawn
matches the state and the executed decision; batched input is refused; the program
writes a GIF of the asked number of frames and refuses bad input writing nothing."""

import jax
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import mecjax
from mecjax.cli import run_program
from mecjax.env import Decision
from mecjax.schedulers import make
from mecjax.viewer import (BACKLOG_FULL_SLOTS, FIGSIZE, FORCED_EDGE, LOCAL_COLOR, UNDECIDED_COLOR,
                           destination_colors, render, render_rgb, server_colors)
from eval import rollout_gif

# The paper task at N=6 with 2 slots: the very program the CLI test below compiles.
S = mecjax.Scenario.default().replace(n_devices=6)
SLOTS = 2


@pytest.fixture(scope="module")
def traj():
    """(obs, decision, outcome, metrics) of 2 slots of the random scheduler, on the host."""
    return jax.device_get(rollout_gif.trajectory(make("random"), S,
                                                 jax.random.key(3), SLOTS))


def slot(traj, k):
    return jax.tree.map(lambda x: x[k], traj[:3])


def artist(ax, gid):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


def test_trajectory_outcome_is_the_environments_own(traj):
    # The per-device outcome rebuilt from the next slot's channel gives the rollout's metrics.
    obs, decision, outcome, metrics = traj
    assert obs.t.tolist() == list(range(SLOTS)) and outcome.cost.shape == (SLOTS, 6)
    np.testing.assert_allclose(outcome.cost.mean(-1), metrics["mean_cost"], rtol=1e-5)
    np.testing.assert_allclose(1e3 * outcome.latency.mean(-1), metrics["latency_ms"], rtol=1e-5)
    np.testing.assert_allclose(outcome.energy.mean(-1), metrics["energy_j"], rtol=1e-5)


def test_devices_servers_and_links_match_the_executed_decision(traj):
    obs, decision, outcome = slot(traj, 0)
    executed = outcome.offload
    assert (executed == 0).any() and (executed > 0).any()  # the fixture shows both kinds
    fig = render(obs, decision, S, outcome=outcome)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]

    devices = artist(ax, "devices")
    np.testing.assert_allclose(devices.get_offsets(), obs.positions)
    faces = devices.get_facecolors()[:, :3]
    colors = server_colors(S.n_servers)
    for i, a in enumerate(executed):
        np.testing.assert_allclose(faces[i], LOCAL_COLOR if a == 0 else colors[a - 1])
    np.testing.assert_allclose(faces, destination_colors(executed, S.n_servers))
    assert len(set(map(tuple, colors))) == S.n_servers and tuple(LOCAL_COLOR) not in set(
        map(tuple, colors))
    # Opacity grows with the battery.
    alpha = devices.get_facecolors()[:, 3]
    assert np.all(np.diff(alpha[np.argsort(obs.battery)]) >= -1e-6)

    servers = artist(ax, "servers")
    np.testing.assert_allclose(servers.get_offsets(), obs.server_positions)
    np.testing.assert_allclose(servers.get_facecolors()[:, :3], colors)

    segments = artist(ax, "links").get_segments()
    sent = np.flatnonzero(executed > 0)
    assert len(segments) == len(sent)
    for seg, i in zip(segments, sent):
        np.testing.assert_allclose(seg, [obs.positions[i], obs.server_positions[executed[i] - 1]])
    assert f"mean cost {outcome.cost.mean():.3f}" in ax.get_title()
    assert ax.get_title().startswith("slot 0")


def test_backlog_bars_fill_with_the_servers_backlog(traj):
    obs, decision, outcome = slot(traj, 0)
    capacity = S.server_cpu_hz * S.slot_s
    obs = obs.replace(backlog=np.array([0.0, 0.5, 5.0], np.float32) * capacity)
    ax = render(obs, decision, S, outcome=outcome).axes[0]
    patches = {p.get_gid(): p for p in ax.patches}
    box = patches["backlog_box_1"].get_height()
    fill = [patches[f"backlog_fill_{j}"].get_height() / box for j in (1, 2, 3)]
    np.testing.assert_allclose(fill, [0.0, 0.5 / BACKLOG_FULL_SLOTS, 1.0], atol=1e-6)


def test_a_battery_forced_device_is_drawn_where_its_task_went(traj):
    obs, _, _ = slot(traj, 0)
    obs = obs.replace(battery=np.where(np.arange(6) == 0, 0.0, obs.battery))
    local = Decision(np.zeros(6, np.int32), np.full(S.n_servers, 0.5, np.float32))
    ax = render(obs, local, S).axes[0]        # outcome estimated from the observation
    devices = artist(ax, "devices")
    best = int(np.argmax(obs.gain_observed[0]))
    np.testing.assert_allclose(devices.get_facecolors()[0, :3], server_colors(S.n_servers)[best])
    np.testing.assert_allclose(devices.get_facecolors()[1:, :3], np.tile(LOCAL_COLOR, (5, 1)))
    np.testing.assert_allclose(devices.get_edgecolors()[0, :3], FORCED_EDGE)
    assert len(artist(ax, "links").get_segments()) == 1
    assert "(estimated)" in ax.get_title()


def test_state_only_and_rgb_array(traj):
    obs, _, _ = slot(traj, 1)
    ax = render(obs, None, S).axes[0]
    assert not [c for c in ax.collections if c.get_gid() == "links"]
    np.testing.assert_allclose(artist(ax, "devices").get_facecolors()[:, :3],
                               np.tile(UNDECIDED_COLOR, (6, 1)))
    assert "no decision" in ax.get_title()
    image = render_rgb(*slot(traj, 1)[:2], S, outcome=slot(traj, 1)[2], dpi=50)
    assert image.dtype == np.uint8 and image.shape == (round(50 * FIGSIZE[1]),
                                                       round(50 * FIGSIZE[0]), 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10   # a picture, not a blank


def test_batched_or_mismatched_input_is_refused_naming_the_field(traj):
    obs, decision, outcome = slot(traj, 0)
    batched = jax.tree.map(lambda x: x[None], obs)
    with pytest.raises(ValueError, match=r"Observation\.t has shape \(1,\).*single instance"):
        render(batched, decision, S)
    with pytest.raises(ValueError, match=r"Decision\.offload has shape \(1, 6\)"):
        render(obs, jax.tree.map(lambda x: x[None], decision), S, outcome=outcome)
    with pytest.raises(ValueError, match=r"outcome\.latency has shape \(1, 6\)"):
        render(obs, decision, S, outcome=jax.tree.map(lambda x: x[None], outcome))
    with pytest.raises(ValueError, match=r"Observation\.positions has shape \(6, 2\); params"):
        render(obs, decision, S.replace(n_devices=7), outcome=outcome)


def test_cli_writes_a_gif_of_the_asked_frames_and_a_still(tmp_path, capsys):
    gif, png = tmp_path / "a" / "r.gif", tmp_path / "a" / "s.png"
    assert run_program("rollout-gif", rollout_gif.main,
                       ["random", "--n-devices", "6", "--slots", str(SLOTS), "--seed", "5",
                        "--dpi", "30", "--out", str(gif), "--png", str(png)]) == 0, \
        capsys.readouterr().err
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == SLOTS
    with Image.open(png) as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in gif.parent.iterdir()) == ["r.gif", "s.png"]   # no temporaries


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown scheduler 'nope'"),
    (["random", "--slots", "0"], "--slots 0 must be in [1, 100]"),
    (["random", "--n-devices", "0"], "--n-devices 0 must be in [1, 1000]"),
    (["random", "--task", "atlantis"], "--task: unknown task 'atlantis'"),
    (["random", "--fps", "0"], "--fps 0.0 must be in (0, 50]"),
    (["random", "--still-slot", "3", "--slots", "2"], "--still-slot 3 must be in [0, 1]"),
    (["random", "--out", "OUT/x.png"], "--out OUT/x.png must end in .gif"),
    (["random", "--out", "OUT"], "must end in .gif"),
    (["random"], "nothing to write"),
    (["drl_fgso", "--n-devices", "7", "--root", "OUT/none"], "drl_fgso needs a trained checkpoint "
                                                              "for N=7"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "keep").write_text("x")
    argv = [a.replace("OUT", str(tmp_path)) for a in args]
    if "--out" not in argv and message != "nothing to write":
        argv += ["--out", str(tmp_path / "r.gif")]
    assert run_program("rollout-gif", rollout_gif.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mecjax rollout-gif: ") and err.count("\n") == 1
    assert message.replace("OUT", str(tmp_path)) in err
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
