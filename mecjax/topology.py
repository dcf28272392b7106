"""Real MEC topologies from packaged data: edge servers at the base-station sites and devices at
the user positions of Melbourne's CBD, from the EUA dataset (``docs/topology.md``).

- :func:`load_eua` reads the packaged CSV files (125 sites, 816 users) as latitude/longitude.
- :func:`to_metres` projects latitude/longitude to local east/north metres.
- :func:`eua_topology` chooses N users and M sites by a seeded rule and returns a
  :class:`Topology` whose coordinates are tuples of floats, ready to become ``Scenario`` fields.

Everything here is NumPy/SciPy on the host; nothing is traced or compiled.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from importlib import resources

import numpy as np
from scipy.optimize import linear_sum_assignment

from mecjax.outputs import UserError

# WGS84 ellipsoid (NIMA TR8350.2): semi-major axis and first eccentricity squared.
WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3

EUA_DIR = "eua"
SITES_FILE = "site-optus-melbCBD.csv"
USERS_FILE = "users-melbcbd-generated.csv"
EUA_SITES = 125
EUA_USERS = 816
# A box around Melbourne's CBD (latitude, longitude) that every row must lie in: a row outside it
# is a corrupt file (a lost digit, swapped columns), not a real point.
EUA_BOX = ((-37.83, 144.94), (-37.80, 144.99))

# Lloyd iterations stop when no assignment changes; this bound is never reached on the EUA data
# (it converges in well under 100 iterations) and only guards against a cycle of float ties.
KMEANS_MAX_ITERS = 300


class DataFileError(UserError):
    """A packaged data file is missing or unreadable: the installation is broken."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A placement of M edge servers and N devices in a square area, in metres.

    ``server_xy`` and ``device_xy`` are tuples of ``(x, y)`` pairs (east, north) rounded to
    0.1 m, all inside ``[0, area_m]^2``. ``site_ids`` are the rows of :func:`load_eua`'s sites
    (0-based data rows of ``site-optus-melbCBD.csv``) where the servers sit, in server order;
    ``user_ids`` the rows of its users, in device order.
    """

    server_xy: tuple[tuple[float, float], ...]
    device_xy: tuple[tuple[float, float], ...]
    area_m: float
    site_ids: tuple[int, ...]
    user_ids: tuple[int, ...]

    @property
    def n_servers(self) -> int:
        return len(self.server_xy)

    @property
    def n_devices(self) -> int:
        return len(self.device_xy)

    def scenario_fields(self) -> dict:
        """The ``Scenario`` fields this topology sets: sizes, positions and area."""
        return {"n_servers": self.n_servers, "n_devices": self.n_devices,
                "server_xy": self.server_xy, "device_xy": self.device_xy,
                "area_m": self.area_m}

    def nearest_server_m(self) -> np.ndarray:
        """Distance from each device to its nearest server, metres, shape ``[N]``."""
        d = np.asarray(self.device_xy)[:, None, :] - np.asarray(self.server_xy)[None, :, :]
        return np.sqrt((d ** 2).sum(-1)).min(1)


# ------------------------------------------------------------------------ reading the data

def _read_latlon(name: str, n_rows: int, columns: tuple[str, str]) -> np.ndarray:
    """Latitude/longitude rows ``[n_rows, 2]`` of a packaged CSV file, validated."""
    where = f"mecjax/data/{EUA_DIR}/{name}"
    try:
        text = resources.files("mecjax.data").joinpath(EUA_DIR, name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        what = "missing" if isinstance(err, FileNotFoundError) else "unreadable"
        raise DataFileError(f"packaged data file {where} is {what} ({err.__class__.__name__}); "
                            "reinstall mecjax") from err
    try:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        rows = np.array([[float(r[columns[0]]), float(r[columns[1]])] for r in reader])
        if rows.shape != (n_rows, 2):
            raise ValueError(f"{len(rows)} rows, expected {n_rows}")
        (lat_lo, lon_lo), (lat_hi, lon_hi) = EUA_BOX
        inside = ((rows[:, 0] >= lat_lo) & (rows[:, 0] <= lat_hi)
                  & (rows[:, 1] >= lon_lo) & (rows[:, 1] <= lon_hi))
        if not inside.all():  # NaN compares False, so it lands here too
            raise ValueError(f"row {int(np.argmin(inside)) + 1} is outside Melbourne's CBD")
    except (ValueError, TypeError, csv.Error) as err:
        raise DataFileError(f"packaged data file {where} is corrupt ({err}); "
                            "reinstall mecjax") from err
    return rows


def load_eua() -> tuple[np.ndarray, np.ndarray]:
    """The EUA Melbourne CBD data: ``(sites [125, 2], users [816, 2])``, latitude and longitude
    in degrees, in file order (read on each call: about 45 kB)."""
    sites = _read_latlon(SITES_FILE, EUA_SITES, ("LATITUDE", "LONGITUDE"))
    users = _read_latlon(USERS_FILE, EUA_USERS, ("Latitude", "Longitude"))
    return sites, users


def eua_origin() -> tuple[float, float]:
    """Centre of the bounding box of every EUA site and user: the projection's origin
    ``(latitude, longitude)``, one fixed point for every selection."""
    sites, users = load_eua()
    both = np.concatenate([sites, users])
    centre = (both.min(0) + both.max(0)) / 2
    return float(centre[0]), float(centre[1])


# ------------------------------------------------------------------------------- projection

def to_metres(latlon, origin) -> np.ndarray:
    """East/north metres ``[K, 2]`` of latitude/longitude points ``[K, 2]`` (degrees) about
    ``origin = (latitude, longitude)``.

    Equirectangular projection on the WGS84 ellipsoid's local radii at the origin: north is the
    meridional radius times the latitude difference, east the prime-vertical radius times the
    cosine of the origin's latitude times the longitude difference. Over Melbourne's CBD
    (2 km x 1.5 km) every distance between projected points is within 0.1 m of the ellipsoidal
    (geodesic) distance (``docs/topology.md``).
    """
    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    lat0, lon0 = (math.radians(float(v)) for v in origin)
    w = 1.0 - WGS84_E2 * math.sin(lat0) ** 2
    meridional = WGS84_A * (1.0 - WGS84_E2) / w ** 1.5
    prime_vertical = WGS84_A / math.sqrt(w)
    rad = np.radians(ll)
    east = prime_vertical * math.cos(lat0) * (rad[:, 1] - lon0)
    north = meridional * (rad[:, 0] - lat0)
    return np.stack([east, north], -1)


# -------------------------------------------------------------------------------- selection

def _check_count(name: str, value, low: int, high: int, why: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{name} must be in [{low}, {high}] ({why}), got {value}")
    return int(value)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means centres ``[k, 2]`` of ``points``: k-means++ seeding (Arthur and Vassilvitskii,
    2007), then Lloyd iterations until no point changes cluster."""
    n = len(points)
    # The only draws are uniform doubles (Generator.random), whose stream NumPy keeps fixed,
    # so the selection does not move with NumPy's or SciPy's sampling code.
    chosen = [min(int(rng.random() * n), n - 1)]
    d2 = ((points - points[chosen[0]]) ** 2).sum(-1)
    for _ in range(1, k):
        cum = np.cumsum(d2)
        # side="right" never lands on a zero-weight point (one already chosen).
        i = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
        chosen.append(i)
        d2 = np.minimum(d2, ((points - points[i]) ** 2).sum(-1))
    centres = points[chosen].copy()
    assign = None
    for _ in range(KMEANS_MAX_ITERS):
        new = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1).argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = points[assign == j]
            if len(members):  # an emptied cluster keeps its centre
                centres[j] = members.mean(0)
    return centres


def eua_topology(n_servers: int = 8, n_devices: int = 50, seed: int = 0,
                 margin_m: float = 50.0) -> Topology:
    """A seeded placement of ``n_servers`` edge servers at EUA base-station sites and
    ``n_devices`` devices at EUA user positions (``docs/topology.md``).

    The rule: draw ``n_devices`` of the 816 users uniformly without replacement with ``seed``;
    cluster them into ``n_servers`` groups by k-means (k-means++ seeding with the same generator,
    then Lloyd iterations); put the servers at distinct sites, matching centroids to sites so that
    the total centroid-to-site distance is least (each centroid goes to its nearest site unless
    two want the same one). Coordinates are projected about :func:`eua_origin`, then shifted so
    the bounding box of the chosen points is centred in a square of side ``area_m`` = its longer
    side plus ``2 * margin_m``. Deterministic for a given seed.
    """
    n_devices = _check_count("n_devices", n_devices, 1, EUA_USERS,
                             f"the EUA data has {EUA_USERS} users")
    n_servers = _check_count("n_servers", n_servers, 1, min(EUA_SITES, n_devices),
                             f"the EUA data has {EUA_SITES} sites, and k-means needs at least "
                             "as many devices as servers")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(margin_m, (int, float, np.integer, np.floating))
            and math.isfinite(margin_m) and margin_m >= 0):
        raise UserError(f"margin_m must be a finite number >= 0, got {margin_m!r}")

    sites_ll, users_ll = load_eua()
    origin = eua_origin()
    rng = np.random.default_rng(int(seed))
    # Uniform sample without replacement: the users with the n smallest random keys.
    user_ids = np.sort(np.argsort(rng.random(EUA_USERS), kind="stable")[:n_devices])
    users = to_metres(users_ll[user_ids], origin)
    sites = to_metres(sites_ll, origin)

    centres = _kmeans(users, n_servers, rng)
    cost = np.sqrt(((centres[:, None, :] - sites[None, :, :]) ** 2).sum(-1))   # [M, 125]
    _, site_cols = linear_sum_assignment(cost)
    site_ids = np.sort(site_cols)  # server order: by site row, independent of k-means labels
    servers = sites[site_ids]

    both = np.concatenate([servers, users])
    lo, hi = both.min(0), both.max(0)
    span = hi - lo
    area = math.ceil((float(span.max()) + 2 * float(margin_m)) * 10) / 10
    shift = (area - span) / 2 - lo  # centres the bounding box: each side keeps >= margin_m

    def pairs(xy: np.ndarray) -> tuple[tuple[float, float], ...]:
        xy = np.clip(np.round(xy + shift, 1), 0.0, area)
        return tuple((float(x), float(y)) for x, y in xy)

    return Topology(server_xy=pairs(servers), device_xy=pairs(users), area_m=area,
                    site_ids=tuple(int(i) for i in site_ids),
                    user_ids=tuple(int(i) for i in user_ids))
