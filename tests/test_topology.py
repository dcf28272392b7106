"""The EUA Melbourne topology: packaged data, projection and the seeded selection rule."""

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from mecjax import topology
from mecjax.outputs import UserError
from mecjax.topology import eua_origin, eua_topology, load_eua, to_metres

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def default():
    return eua_topology(n_servers=8, n_devices=50, seed=0)


def test_load_eua_reads_every_row():
    sites, users = load_eua()
    assert sites.shape == (125, 2) and users.shape == (816, 2)
    # First data rows of each file, as printed in the CSVs.
    np.testing.assert_array_equal(sites[0], [-37.81517, 144.97476])
    np.testing.assert_allclose(users[0], [-37.814619463998895, 144.9744434939978])
    assert len({tuple(r) for r in sites}) == 125
    sites[0, 0] = 0.0  # each call reads the files again: a caller's change stays its own
    assert load_eua()[0][0, 0] == -37.81517


def test_to_metres_matches_degree_lengths():
    # Lengths of a degree on WGS84 from the standard series in latitude (independent of the
    # radii to_metres uses): 111132.954 - 559.822 cos 2p + 1.175 cos 4p m per degree of latitude,
    # 111412.84 cos p - 93.5 cos 3p + 0.118 cos 5p per degree of longitude.
    lat0, lon0 = eua_origin()
    p = math.radians(lat0)
    per_lat = 111132.954 - 559.822 * math.cos(2 * p) + 1.175 * math.cos(4 * p)
    per_lon = 111412.84 * math.cos(p) - 93.5 * math.cos(3 * p) + 0.118 * math.cos(5 * p)
    xy = to_metres([[lat0, lon0], [lat0 + 0.01, lon0], [lat0, lon0 - 0.01]], (lat0, lon0))
    np.testing.assert_allclose(xy, [[0, 0], [0, 0.01 * per_lat], [-0.01 * per_lon, 0]], atol=0.05)


def test_selection_counts_and_determinism(default):
    t = default
    assert (t.n_servers, t.n_devices) == (8, 50)
    assert len(t.site_ids) == len(set(t.site_ids)) == 8
    assert len(t.user_ids) == len(set(t.user_ids)) == 50
    assert all(0 <= i < 125 for i in t.site_ids) and all(0 <= i < 816 for i in t.user_ids)
    assert eua_topology(n_servers=8, n_devices=50, seed=0) == t
    hash(t)  # tuples of floats: usable as Scenario fields
    other = eua_topology(n_servers=8, n_devices=50, seed=1)
    assert other.user_ids != t.user_ids and other.site_ids != t.site_ids
    assert set(t.scenario_fields()) == {"n_servers", "n_devices", "server_xy", "device_xy",
                                        "area_m"}


def test_positions_are_real_sites_and_users(default):
    t = default
    sites, users = load_eua()
    origin = eua_origin()
    servers_m = to_metres(sites[list(t.site_ids)], origin)
    users_m = to_metres(users[list(t.user_ids)], origin)
    # One shift maps every projected point to its coordinate (up to the 0.1 m rounding).
    shift = np.asarray(t.device_xy[0]) - users_m[0]
    np.testing.assert_allclose(np.asarray(t.server_xy), servers_m + shift, atol=0.11)
    np.testing.assert_allclose(np.asarray(t.device_xy), users_m + shift, atol=0.11)
    for v in np.ravel(t.server_xy + t.device_xy):
        assert round(v, 1) == v


def test_every_point_inside_the_area(default):
    for t in (default, eua_topology(n_servers=2, n_devices=4, seed=3, margin_m=0.0)):
        xy = np.asarray(t.server_xy + t.device_xy)
        assert xy.min() >= 0.0 and xy.max() <= t.area_m
    xy = np.asarray(default.server_xy + default.device_xy)
    assert xy.min() >= 50.0 - 0.05 and xy.max() <= default.area_m - 50.0 + 0.05


def test_distances_are_those_of_the_cbd():
    t = eua_topology(n_servers=8, n_devices=816, seed=0)
    # Melbourne's CBD is about 2 km x 1.5 km; the area is its longer side plus two margins.
    assert 1900.0 < t.area_m < 2300.0
    nearest = t.nearest_server_m()
    assert 100.0 < nearest.mean() < 300.0 and nearest.max() < 600.0
    s = np.asarray(t.server_xy)
    gaps = np.sqrt(((s[:, None] - s[None]) ** 2).sum(-1))[np.triu_indices(8, 1)]
    assert gaps.min() > 100.0  # k-means spreads the servers over the CBD


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0]])
    pts = np.concatenate([m + rng.normal(0, 20, (30, 2)) for m in means])
    centres = topology._kmeans(pts, 3, np.random.default_rng(5))
    order = np.argsort(centres[:, 0] + 2 * centres[:, 1])
    np.testing.assert_allclose(centres[order], [pts[:30].mean(0), pts[30:60].mean(0),
                                                pts[60:].mean(0)], atol=1e-9)


@pytest.mark.parametrize("kwargs,name", [
    (dict(n_devices=0), "n_devices"),
    (dict(n_devices=817), "n_devices"),
    (dict(n_devices=True), "n_devices"),
    (dict(n_servers=0), "n_servers"),
    (dict(n_servers=126, n_devices=816), "n_servers"),
    (dict(n_servers=5, n_devices=4), "n_servers"),
    (dict(seed=-1), "seed"),
    (dict(margin_m=-1.0), "margin_m"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        eua_topology(**kwargs)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Make load_eua read copies of the packaged files under tmp_path/eua."""
    (tmp_path / "eua").mkdir()
    for name in (topology.SITES_FILE, topology.USERS_FILE):
        (tmp_path / "eua" / name).write_bytes(
            (ROOT / "mecjax" / "data" / "eua" / name).read_bytes())

    class Files:
        @staticmethod
        def files(package):
            assert package == "mecjax.data"
            return tmp_path

    monkeypatch.setattr(topology, "resources", Files)
    yield tmp_path / "eua"


def test_missing_or_corrupt_file_is_one_line_error(data_dir):
    assert load_eua()[1].shape == (816, 2)  # the copies read as the originals
    users = data_dir / topology.USERS_FILE
    lines = users.read_text().splitlines()
    for text, what in [("\n".join(lines[:-1]), "816"),          # a row lost
                       ("\n".join(lines[:5] + ["-37.81,abc"] + lines[6:]), "abc"),
                       ("\n".join(lines[:5] + ["-38.81,144.96"] + lines[6:]), "outside")]:
        users.write_text(text)
        with pytest.raises(UserError, match=rf"mecjax/data/eua/{topology.USERS_FILE} is corrupt"
                                            rf" \(.*{what}") as err:
            load_eua()
        assert "\n" not in str(err.value)
    users.unlink()
    with pytest.raises(UserError, match=f"{topology.USERS_FILE} is missing"):
        load_eua()


def test_wheel_ships_the_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["mecjax"]
    shipped = {p.name for g in globs for p in (ROOT / "mecjax").glob(g)}
    assert {topology.SITES_FILE, topology.USERS_FILE, "LICENSE", "README.md"} <= shipped
