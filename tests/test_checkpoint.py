"""Checkpoint layer: exact round trips, retention, resume, and loud, side-effect-free failures."""

import hashlib
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mecjax import checkpoint as ckpt
from mecjax.checkpoint import CheckpointCorruptError, CheckpointMismatchError

# orbax abandons the other reads when one array read fails; the garbage collector finalises
# them whenever it runs, in whichever test: noise from orbax, not a failure of this module.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <coroutine object _read_array_index_and_device_put"
    ":pytest.PytestUnraisableExceptionWarning")

CONFIG = {"method": "gat_mec", "n_devices": 50, "n_servers": 5, "lr": 1e-3, "hidden": [64, 64]}


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


def make_state(seed: int):
    """A training-state-like pytree with every supported kind of leaf."""
    key = jax.random.key(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    params = _MLP().init(k1, jnp.ones((1, 4)))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    # one real update so that mu/nu/count are non-trivial
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5 + seed), params)
    _, opt_state = opt.update(grads, opt_state, params)
    f = jax.random.normal(k2, (4, 5), jnp.float32)
    f = f.at[0, 0].set(jnp.nan).at[0, 1].set(-0.0).at[0, 2].set(jnp.inf)  # bit patterns matter
    return {
        "params": params,
        "opt_state": opt_state,
        "rng": jax.random.split(k3, 4),  # typed PRNG key array
        "rng1": k3,  # scalar typed key
        "buffers": {
            "obs": f,
            "actions": jnp.arange(6, dtype=jnp.int32).reshape(2, 3) * (seed + 1),
            "done": jnp.array([True, False, seed % 2 == 0]),
            "np_counts": np.arange(3, dtype=np.int32) + seed,
            # over OCDBT's 1 KiB inline limit: stored in a data file that no format checksums
            "replay": jax.random.normal(k2, (512, 8), jnp.float32) + seed,
        },
        "step": jnp.asarray(7 + seed, jnp.int32),  # 0-d arrays
        "scale": jnp.float32(0.25 + seed),
        "none": None,  # an empty node, as flax/optax states have
    }


def assert_bit_exact(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        where = jax.tree_util.keystr(path)
        assert type(x) is type(y), where
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert x.dtype == y.dtype and x.shape == y.shape, where
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, where
        assert x.tobytes() == y.tobytes(), where


def tree_hash(directory) -> dict:
    """Every file (content hash) and directory under ``directory``."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), directory)] = "<dir>"
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run directory with checkpoints at steps 10 and 20 (states from seeds 1 and 2)."""
    d = tmp_path_factory.mktemp("ckpt") / "run"
    ckpt.save(d, 10, make_state(1), dict(CONFIG, seed=1))
    ckpt.save(d, 20, make_state(2), dict(CONFIG, seed=2))
    return d


@pytest.fixture
def run_copy(saved, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(saved, d)
    return d


# ------------------------------------------------------------------ round trips and resume


def test_round_trip_is_bit_exact_into_a_concrete_target(saved):
    target = make_state(0)  # same structure, different values: everything must come from disk
    state, config, step = ckpt.restore(saved, target, step=20)
    assert step == 20
    assert config == dict(CONFIG, seed=2)
    assert_bit_exact(state, make_state(2))
    # restored keys are typed keys that draw the same numbers
    np.testing.assert_array_equal(
        jax.random.uniform(state["rng1"], (3,)), jax.random.uniform(make_state(2)["rng1"], (3,))
    )
    # leaf kinds follow the target: numpy stays numpy, jax stays jax
    assert isinstance(state["buffers"]["np_counts"], np.ndarray)
    assert isinstance(state["buffers"]["obs"], jax.Array)


def test_round_trip_into_an_abstract_target(saved):
    abstract = jax.eval_shape(lambda: make_state(0))
    state, _, _ = ckpt.restore(saved, abstract)
    want = make_state(2)
    assert jax.tree.structure(state) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(want)):
        assert isinstance(x, jax.Array)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert state["opt_state"][0].count.dtype == jnp.int32
    assert state["step"].dtype == jnp.int32 and int(state["step"]) == 9


def test_resume_latest_and_specific_step(saved):
    assert ckpt.latest_step(saved) == 20
    assert ckpt.all_steps(saved) == [10, 20]
    state, config, step = ckpt.restore(saved, make_state(0))
    assert step == 20 and config["seed"] == 2
    assert_bit_exact(state, make_state(2))
    state, config, step = ckpt.restore(saved, make_state(0), step=10)
    assert step == 10 and config["seed"] == 1
    assert_bit_exact(state, make_state(1))
    assert ckpt.load_config(saved) == dict(CONFIG, seed=2)
    assert ckpt.load_config(saved, step=10) == dict(CONFIG, seed=1)


def test_keep_retains_only_the_last_k(tmp_path):
    d = tmp_path / "run"
    state = {"w": jnp.zeros(3)}
    for s in range(1, 6):
        ckpt.save(d, s * 100, jax.tree.map(lambda x: x + s, state), {"s": s}, keep=2)
    assert ckpt.all_steps(d) == [400, 500]
    assert sorted(os.listdir(d)) == ["400", "500"]
    restored, config, step = ckpt.restore(d, state)
    assert step == 500 and config == {"s": 5}
    np.testing.assert_array_equal(restored["w"], np.full(3, 5.0, np.float32))


def test_latest_step_of_missing_or_empty_directory(tmp_path):
    missing = tmp_path / "nope"
    assert ckpt.latest_step(missing) is None
    assert not missing.exists()  # reading never creates anything
    (tmp_path / "empty").mkdir()
    assert ckpt.latest_step(tmp_path / "empty") is None


def test_save_is_synchronous_and_atomic(tmp_path, monkeypatch):
    """The step dir appears by one rename of a complete temporary dir; half-written saves are ignored."""
    d = tmp_path / "run"
    ckpt.save(d, 10, {"w": jnp.ones(2)}, {})
    renames = []
    real_rename = os.rename

    def spy(src, dst, *args, **kwargs):
        renames.append((os.fspath(src), os.fspath(dst), os.path.exists(dst)))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", spy)
    ckpt.save(d, 20, {"w": jnp.ones(2)}, {})
    monkeypatch.undo()
    final = [(s, t, existed) for s, t, existed in renames if t == os.fspath(d / "20")]
    assert len(final) == 1
    src, _, existed = final[0]
    assert not existed and ".orbax-checkpoint-tmp" in os.path.basename(src)
    assert (d / "20" / "commit_success.txt").exists()  # committed when save() returns

    # a save that crashed half-way leaves only a temporary directory: invisible to readers
    crashed = d / "30.orbax-checkpoint-tmp"
    (crashed / "state").mkdir(parents=True)
    (crashed / "state" / "junk").write_bytes(b"\0" * 10)
    assert ckpt.latest_step(d) == 20
    _, _, step = ckpt.restore(d, {"w": jnp.zeros(2)})
    assert step == 20
    ckpt.save(d, 30, {"w": jnp.ones(2)}, {})  # the next save cleans the leftover up
    assert sorted(os.listdir(d)) == ["10", "20", "30"]


# ------------------------------------------------------------------ failures: loud and harmless


def test_expect_mismatch_names_every_field(run_copy):
    before = tree_hash(run_copy)
    with pytest.raises(CheckpointMismatchError) as info:
        ckpt.restore(run_copy, make_state(0),
                     expect={"method": "drl_fgso", "n_devices": 150, "lr": 1e-3, "absent": 1})
    msg = str(info.value)
    assert "checkpoint was made for method='gat_mec' but 'drl_fgso' was requested" in msg
    assert "n_devices: saved 50, expected 150" in msg
    assert "absent: not in the saved config, expected 1" in msg
    assert "lr:" not in msg and "hidden" not in msg  # matching fields are not reported
    assert str(run_copy / "20") in msg
    assert isinstance(info.value, ValueError)
    # matching expectations pass; tuples compare equal to the lists JSON gives back
    _, config, _ = ckpt.restore(run_copy, make_state(0), expect={"method": "gat_mec", "hidden": (64, 64)})
    assert config["hidden"] == [64, 64]
    assert tree_hash(run_copy) == before


def test_structure_mismatch_names_the_leaf(run_copy):
    before = tree_hash(run_copy)
    extra = make_state(0)
    extra["buffers"]["extra"] = jnp.zeros(3)
    with pytest.raises(CheckpointMismatchError, match=r"\['buffers'\]\['extra'\]: in the target but not"):
        ckpt.restore(run_copy, extra)

    missing = make_state(0)
    del missing["buffers"]["done"]
    with pytest.raises(CheckpointMismatchError, match=r"\['buffers'\]\['done'\]: in the checkpoint but not"):
        ckpt.restore(run_copy, missing)

    reshaped = make_state(0)
    reshaped["buffers"]["obs"] = jnp.zeros((4, 6), jnp.float32)
    with pytest.raises(CheckpointMismatchError) as info:
        ckpt.restore(run_copy, reshaped)
    msg = str(info.value)
    assert "['buffers']['obs']" in msg and "(4, 5)" in msg and "(4, 6)" in msg

    retyped = make_state(0)
    retyped["buffers"]["actions"] = retyped["buffers"]["actions"].astype(jnp.float32)
    with pytest.raises(CheckpointMismatchError, match=r"\['buffers'\]\['actions'\].*int32.*float32"):
        ckpt.restore(run_copy, retyped)

    wrong_kind = make_state(0)
    wrong_kind["rng1"] = jnp.zeros(2, jnp.uint32)  # raw uint32 key data instead of a typed key
    with pytest.raises(CheckpointMismatchError, match=r"\['rng1'\]"):
        ckpt.restore(run_copy, wrong_kind)

    bigger_net = make_state(0)
    bigger_net["params"] = _MLP().init(jax.random.key(0), jnp.ones((1, 7)))
    with pytest.raises(CheckpointMismatchError, match=r"\['params'\]\['params'\]\['Dense_1'\]\['kernel'\].*\(4, 16\).*\(7, 16\)"):
        ckpt.restore(run_copy, bigger_net)
    assert tree_hash(run_copy) == before


def test_missing_directory_or_step_is_file_not_found(tmp_path, saved):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.restore(missing, {"w": jnp.zeros(2)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.load_config(missing)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.restore(empty, {"w": jnp.zeros(2)})
    assert os.listdir(empty) == []
    before = tree_hash(saved)
    with pytest.raises(FileNotFoundError, match=r"step 15.*\[10, 20\]"):
        ckpt.restore(saved, make_state(0), step=15)
    assert tree_hash(saved) == before


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# tensorstore reports "Event loop is closed" as the abandoned reads finish: noise as well
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_array_files_are_detected(saved, tmp_path):
    """Every single-byte flip or truncation of a state file either fails loudly or does not matter."""
    target = make_state(0)
    state_files = sorted(
        p.relative_to(saved) for p in (saved / "20" / "state").rglob("*")
        if p.is_file() and p.suffix != ".txt"
    )
    assert state_files
    detected = set()
    for rel in state_files:
        for damage in ("flip", "truncate"):
            d = tmp_path / f"{damage}-{len(detected)}-{rel.name}"
            shutil.copytree(saved, d)
            p = d / rel
            if damage == "flip":
                _flip_middle_byte(p)
            else:
                p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
            before = tree_hash(d)
            try:
                state, _, _ = ckpt.restore(d, target)
            except CheckpointCorruptError as e:  # never a CheckpointMismatchError
                assert "step 20" in str(e) and str(d / "20") in str(e)
                detected.add((rel, damage, "SHA-256" in str(e)))
            else:  # this file is not read back (orbax keeps per-process leftovers): must be exact
                assert_bit_exact(state, make_state(2))
            assert tree_hash(d) == before
            assert ckpt.load_config(d) == dict(CONFIG, seed=2)  # the config does not depend on arrays
            if damage == "flip" and rel == state_files[0]:
                assert ckpt.restore(d, target, step=10)[2] == 10  # other steps are unaffected
            shutil.rmtree(d)
    assert any(damage == "flip" for _, damage, _ in detected)
    assert any(damage == "truncate" for _, damage, _ in detected)
    # zstd without frame checksums decodes some flips silently: only our SHA-256 catches them
    assert any(by_sha for _, _, by_sha in detected)


def test_arrays_that_read_fine_but_differ_are_detected(run_copy):
    """Valid orbax arrays of the right structure but other values (step 10's) are refused."""
    shutil.rmtree(run_copy / "20" / "state")
    shutil.copytree(run_copy / "10" / "state", run_copy / "20" / "state")
    before = tree_hash(run_copy)
    with pytest.raises(CheckpointCorruptError, match=r"step 20.*leaf \[.*\] does not match its SHA-256"):
        ckpt.restore(run_copy, make_state(0))
    assert tree_hash(run_copy) == before


def test_corrupt_config_is_detected(run_copy):
    config_file = run_copy / "20" / "config" / "metadata"
    assert config_file.is_file()  # orbax's JsonSave layout

    config_file.write_bytes(config_file.read_bytes()[:9])  # truncated JSON
    before = tree_hash(run_copy)
    for call in (lambda: ckpt.load_config(run_copy), lambda: ckpt.restore(run_copy, make_state(0))):
        with pytest.raises(CheckpointCorruptError, match=r"step 20.*corrupt") as info:
            call()
        assert str(run_copy / "20") in str(info.value)
    assert tree_hash(run_copy) == before

    # valid JSON with an altered value: caught by the config's SHA-256
    config_file.write_text('{"method": "drl_fgso", "n_devices": 50}')
    before = tree_hash(run_copy)
    with pytest.raises(CheckpointCorruptError, match="SHA-256"):
        ckpt.load_config(run_copy)
    assert tree_hash(run_copy) == before
    assert ckpt.load_config(run_copy, step=10)["seed"] == 1


def test_save_refuses_bad_steps_and_inputs_without_writing(run_copy, tmp_path):
    before = tree_hash(run_copy)
    with pytest.raises(ValueError, match="already exists"):
        ckpt.save(run_copy, 20, make_state(3), CONFIG)
    with pytest.raises(ValueError, match="older than the latest"):
        ckpt.save(run_copy, 15, make_state(3), CONFIG)
    with pytest.raises(TypeError, match="JSON"):
        ckpt.save(run_copy, 30, make_state(3), {"bad": object()})
    with pytest.raises(TypeError, match=r"\['name'\].*str"):
        ckpt.save(run_copy, 30, {"name": "not an array"}, CONFIG)
    with pytest.raises(ValueError, match="keep"):
        ckpt.save(run_copy, 30, make_state(3), CONFIG, keep=0)
    assert tree_hash(run_copy) == before
    fresh = tmp_path / "fresh"
    with pytest.raises(TypeError):
        ckpt.save(fresh, 1, {"w": jnp.zeros(2)}, {"bad": {1, 2}})
    assert not fresh.exists()


def test_empty_state_round_trips(tmp_path):
    d = tmp_path / "run"
    ckpt.save(d, 0, {"nothing": None}, {"method": "local"})
    state, config, step = ckpt.restore(d, {"nothing": None})
    assert state == {"nothing": None} and config == {"method": "local"} and step == 0


def test_unusual_dtypes_round_trip(tmp_path):
    d = tmp_path / "run"
    state = {
        "bf16": jnp.arange(5, dtype=jnp.bfloat16) / 3,
        "f16": jnp.arange(3, dtype=jnp.float16) / 7,
        "i8": jnp.arange(-2, 2, dtype=jnp.int8),
        "u32": jnp.arange(3, dtype=jnp.uint32),
        "c64": np.array([1 + 2j], np.complex64),
        "f64": np.array([0.1]),
        "rbg_key": jax.random.key(3, impl="rbg"),
    }
    ckpt.save(d, 1, state, {})
    target = {k: (v if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v * 0) for k, v in state.items()}
    restored, _, _ = ckpt.restore(d, target)
    assert_bit_exact(restored, state)
    # a key of another implementation is a different dtype: refused, not silently re-wrapped
    with pytest.raises(CheckpointMismatchError, match=r"\['rbg_key'\].*key<rbg>.*key<fry>"):
        ckpt.restore(d, dict(target, rbg_key=jax.random.key(0, impl="threefry2x32")))


def test_unsupported_leaves_are_refused_before_writing(tmp_path):
    """Python scalars and zero-size arrays never occur in train states; they are refused loudly."""
    d = tmp_path / "run"
    for bad, error in [({"n": 3}, TypeError), ({"x": 0.5}, TypeError),
                       ({"empty": np.zeros((0, 3), np.float32)}, ValueError),
                       ({"no_keys": jax.random.split(jax.random.key(0), 0)}, ValueError)]:
        with pytest.raises(error, match=rf"\['{next(iter(bad))}'\]"):
            ckpt.save(d, 1, bad, {})
    assert not d.exists()


SAVE_ON_SECOND_DEVICE = """
import sys, jax, jax.numpy as jnp
from mecjax import checkpoint as ckpt
dev = jax.devices()[1]
state = {"w": jax.device_put(jnp.arange(6.0).reshape(2, 3), dev),
         "rng": jax.device_put(jax.random.split(jax.random.key(3), 2), dev)}
ckpt.save(sys.argv[1], 5, state, {"method": "x"})
"""


def test_restores_on_a_machine_without_the_saving_device(tmp_path):
    # A checkpoint written on another machine (a GPU box, or cpu:1 here) names a device this
    # process lacks; an abstract target must land on this process's default device instead.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", SAVE_ON_SECOND_DEVICE, str(tmp_path / "c")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    target = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32),
              "rng": jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 2))}
    state, config, step = ckpt.restore(tmp_path / "c", target)
    assert step == 5 and config == {"method": "x"}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(
        np.asarray(jax.random.key_data(state["rng"])),
        np.asarray(jax.random.key_data(jax.random.split(jax.random.key(3), 2))))
    assert state["w"].devices() == {jax.devices()[0]}
