"""The ``mecjax`` command."""

from __future__ import annotations

import argparse
import contextlib
import sys


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def enable_compilation_cache(path: str | None = None) -> None:
    """Persist XLA compilations across runs (DESIGN.md section 6: 16 s -> 2.5 s)."""
    import os

    import jax

    path = path or os.environ.get("MECJAX_CACHE_DIR") or os.path.expanduser("~/.cache/mecjax/xla")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@contextlib.contextmanager
def profiled(trace_dir: str | None):
    """Write a jax.profiler trace of the enclosed work to ``trace_dir`` (if given).

    Open it with TensorBoard's profile plugin (``tensorboard --logdir DIR``) or load
    the ``*.trace.json.gz`` under DIR/plugins/profile/ into https://ui.perfetto.dev.
    """
    if not trace_dir:
        yield
        return
    import jax

    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        yield
    print(f"profile trace written under {trace_dir}")


def _sweep(args: argparse.Namespace) -> int:
    from mecjax.sweep import SweepSpec, parse_grid_item, run_sweep

    if args.distributed:
        from mecjax.sharding import maybe_initialize_distributed

        maybe_initialize_distributed()
    try:
        grid = tuple(parse_grid_item(g) for g in (args.grid or ["n_devices=50,100,150"]))
        names = tuple(n.strip() for n in args.schedulers.split(",") if n.strip())
        from mecjax.schedulers import available

        unknown = [n for n in names if n not in available()]
        if unknown:
            raise ValueError(f"unknown scheduler(s) {unknown}; available: {', '.join(available())}")
        from mecjax.config import Scenario

        for name, values in grid:
            for v in values:
                Scenario(**{name: v})  # names the invalid field and its allowed range
    except ValueError as err:
        raise SystemExit(f"mecjax sweep: {err}")
    spec = SweepSpec(schedulers=names, grid=grid, instances=args.instances, slots=args.slots,
                     seed=args.seed)
    with profiled(args.profile):
        run_sweep(spec, args.out, shard=not args.no_shard)
    return 0


def _parse_sets(items) -> dict:
    """['hidden=64', 'lr=0.001'] -> {'hidden': 64, 'lr': 0.001} (ints, floats, tuples, strings)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set takes NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        parts = [p.strip() for p in v.split(",")]

        def num(t):
            for cast in (int, float):
                try:
                    return cast(t)
                except ValueError:
                    pass
            return t

        out[k.strip()] = tuple(num(p) for p in parts) if len(parts) > 1 else num(parts[0])
    return out


def _train(args: argparse.Namespace) -> int:
    from mecjax import learners  # noqa: F401  (registers the learners)
    from mecjax.config import Scenario
    from mecjax.learners.base import get_learner
    from mecjax.train import train

    try:
        learner = get_learner(args.method, **_parse_sets(args.set))
        scenario = Scenario(n_devices=args.n_devices, n_servers=args.n_servers)
    except ValueError as err:
        raise SystemExit(f"mecjax train: {err}")
    run_dir = args.run_dir or f"runs/{args.method}_N{args.n_devices}"
    with profiled(args.profile):
        train(learner, scenario, run_dir, total_updates=args.updates, chunk=args.chunk,
              seed=args.seed, resume=args.resume)
    print(f"run directory: {run_dir} (ckpt/, metrics.csv, learning_curve.png)")
    return 0


def _train_shipped(args: argparse.Namespace) -> int:
    from mecjax import learners  # noqa: F401  (registers the learners)
    from mecjax.config import Scenario
    from mecjax.learners.base import get_learner
    from mecjax.learners.recipes import (DRL_GAT_RECIPE, RECIPES, SHIPPED_SIZES, TWIN_RECIPE,
                                         drl_gat_hyper, shipped_dir)
    from mecjax.train import export_policy, train

    # drl_gat (the unified scheduler's DRL agents) needs the shipped GAT-MEC policies first.
    everything = list(RECIPES) + ["drl_gat", "twin"]
    methods = args.methods.split(",") if args.methods else everything
    for method in methods:
        if method == "twin":   # one per-device forecaster serves every N
            recipe, sizes = TWIN_RECIPE, (TWIN_RECIPE["n_devices"],)
        elif method == "drl_gat":
            recipe, sizes = DRL_GAT_RECIPE, args.sizes or SHIPPED_SIZES
        elif method in RECIPES:
            recipe, sizes = RECIPES[method], args.sizes or SHIPPED_SIZES
        else:
            raise SystemExit(f"mecjax train-shipped: unknown method {method!r}; choose from "
                             f"{', '.join(everything)}")
        for n in sizes:
            # Full, resumable runs go to runs/; only the small policy is shipped.
            run_dir = shipped_dir(method, n, args.runs)
            hyper = drl_gat_hyper(n, args.root) if method == "drl_gat" else recipe["hyper"]
            train(get_learner(method, **hyper), Scenario(n_devices=n), run_dir,
                  total_updates=recipe["updates"], chunk=recipe["chunk"], seed=args.seed,
                  resume=True, keep=1)
            out = export_policy(run_dir, shipped_dir(method, n, args.root))
            print(f"[{method}] N={n}: policy exported to {out}")
    return 0


def _compare_learned(args: argparse.Namespace) -> int:
    from mecjax import learners  # noqa: F401
    from mecjax.experiments.learned import run

    run(sizes=args.sizes or (50, 150), instances=args.instances, slots=args.slots,
        ckpt_root=args.root, out_dir=args.out)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.what == "env":
        from mecjax.bench import bench_env

        bench_env(ns=args.ns or (50, 150, 1000), batches=args.batches or (1, 64, 1024, 8192),
                  out_dir=None if args.no_write else args.out, budget=args.budget,
                  repeats=args.repeats)
        return 0
    if args.what == "optim":
        from mecjax.bench_optim import bench_optim

        bench_optim(ns=args.ns or (50, 150), batches=args.batches or (1, 64, 1024),
                    out_dir=None if args.no_write else args.out, repeats=args.repeats,
                    population=args.population, iterations=args.iterations,
                    numpy_budget=args.numpy_budget, time_limit_s=args.time_limit)
        return 0
    if args.what == "train":
        from mecjax.bench_train import bench_train

        bench_train(ns=args.ns or (50, 150), out_dir=None if args.no_write else args.out,
                    repeats=args.repeats)
        return 0
    if args.what == "schedulers":
        from mecjax.bench_schedulers import bench_schedulers

        bench_schedulers(ns=args.ns or (50, 150), instances=(args.batches or (32,))[0],
                         repeats=min(args.repeats, 2),
                         out_dir=None if args.no_write else args.out)
        return 0
    if args.what == "scale":
        from mecjax.bench_scale import bench_scale

        bench_scale(out_dir=None if args.no_write else args.out, repeats=args.repeats)
        return 0
    raise SystemExit(f"unknown benchmark {args.what!r}")


def _reproduce(args: argparse.Namespace) -> int:
    from mecjax.experiments.reproduce import Settings, reproduce

    base = Settings.full() if args.full else Settings()
    settings = Settings(instances=args.instances or base.instances,
                        slots=args.slots or base.slots, seed=args.seed,
                        sizes=args.sizes or base.sizes)
    with profiled(args.profile):
        reproduce(settings, out_dir=args.out, cache_dir=args.cache)
    return 0


def _optgap(args: argparse.Namespace) -> int:
    from mecjax.experiments.optimality_gap import run

    run(n_devices=args.n_devices, n_servers=args.n_servers, n_slots=args.slots, seed=args.seed,
        out_dir=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mecjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="throughput benchmarks against NumPy")
    bench.add_argument("what", choices=["env", "optim", "scale", "train", "schedulers"],
                       help="what to benchmark")
    bench.add_argument("--ns", type=_ints, help="device counts, e.g. 50,150,1000")
    bench.add_argument("--batches", type=_ints, help="instance batch sizes, e.g. 1,64,1024")
    bench.add_argument("--budget", type=float, default=4e6,
                       help="device-steps per timed rollout (sets the slot count)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    bench.add_argument("--out", default="results/benchmarks", help="where tables are written")
    bench.add_argument("--no-write", action="store_true", help="print only")
    bench.add_argument("--population", type=int, default=30, help="optim: population / particles")
    bench.add_argument("--iterations", type=int, default=100, help="optim: generations per decision")
    bench.add_argument("--numpy-budget", type=float, default=1e7,
                       help="optim: device evaluations per timed NumPy QIO run (generations "
                            "timed, scaled linearly to --iterations)")
    bench.add_argument("--time-limit", type=float, default=20.0,
                       help="optim: stop repeating once this many seconds were timed")
    bench.set_defaults(func=_bench)

    rep = sub.add_parser("reproduce", help="regenerate the paper's tables and figures")
    rep.add_argument("--full", action="store_true",
                     help="paper scale (256 instances x 100 slots per cell): for a GPU")
    rep.add_argument("--instances", type=int, help="instances per cell (default 32)")
    rep.add_argument("--slots", type=int, help="slots per instance (default 25)")
    rep.add_argument("--sizes", type=_ints, help="device counts (default 50,100,150)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--out", default="results", help="where tables and figures are written")
    rep.add_argument("--cache", help="where finished cells are kept (default OUT/reproduce_cells)")
    rep.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    rep.set_defaults(func=_reproduce)

    sw = sub.add_parser("sweep", help="grid over scenario parameters and schedulers, sharded")
    sw.add_argument("--schedulers", default="local,best_response,qio_mec",
                    help="comma-separated scheduler names")
    sw.add_argument("--grid", action="append", metavar="FIELD=V1,V2",
                    help="a Scenario field and its values; repeat for more axes "
                         "(default n_devices=50,100,150); the first is the figure's x axis")
    sw.add_argument("--instances", type=int, default=256)
    sw.add_argument("--slots", type=int, default=10)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--out", default="results/sweeps/default")
    sw.add_argument("--no-shard", action="store_true", help="plain vmap on the default device")
    sw.add_argument("--distributed", action="store_true",
                    help="call jax.distributed.initialize() first (multi-host runs)")
    sw.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    sw.set_defaults(func=_sweep)

    tr = sub.add_parser("train", help="train a learned scheduler, with checkpoints and resume")
    tr.add_argument("method", help="drl_fgso, gat_mec, tsg_marl, twin (the DT forecaster) or "
                                   "drl_gat (DRL on GAT embeddings; --set gat_checkpoint=DIR)")
    tr.add_argument("--n-devices", type=int, default=50)
    tr.add_argument("--n-servers", type=int, default=3)
    tr.add_argument("--updates", type=int, default=2000, help="training updates (slots)")
    tr.add_argument("--chunk", type=int, default=100, help="updates per jitted chunk/checkpoint")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--run-dir", help="default runs/METHOD_N<n>")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    tr.add_argument("--set", action="append", metavar="NAME=VALUE",
                    help="a hyper-parameter of the learner (repeatable)")
    tr.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    tr.set_defaults(func=_train)

    ts = sub.add_parser("train-shipped", help="train the checkpoints shipped in results/checkpoints")
    ts.add_argument("--methods", help="comma-separated (default: all learned methods and the twin)")
    ts.add_argument("--sizes", type=_ints, help="device counts (default 50,100,150)")
    ts.add_argument("--root", default="results/checkpoints", help="where the policies are shipped")
    ts.add_argument("--runs", default="runs/shipped", help="where the full, resumable runs go")
    ts.add_argument("--seed", type=int, default=0)
    ts.set_defaults(func=_train_shipped)

    cl = sub.add_parser("compare-learned", help="shipped learned schedulers vs the references")
    cl.add_argument("--sizes", type=_ints, help="device counts (default 50,150)")
    cl.add_argument("--instances", type=int, default=32)
    cl.add_argument("--slots", type=int, default=20)
    cl.add_argument("--root", default="results/checkpoints")
    cl.add_argument("--out", default="results")
    cl.set_defaults(func=_compare_learned)

    gap = sub.add_parser("optgap", help="optimality gap of the heuristics to the exact optimum")
    gap.add_argument("--n-devices", type=int, default=8)
    gap.add_argument("--n-servers", type=int, default=3)
    gap.add_argument("--slots", type=int, default=64, help="random slots")
    gap.add_argument("--seed", type=int, default=0)
    gap.add_argument("--out", default="results")
    gap.set_defaults(func=_optgap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
