"""``mecjax bench WHAT``: the throughput benchmarks (``python -m benchmarks.cli WHAT``)."""

from __future__ import annotations

import argparse

from mecjax.outputs import UserError
from mecjax.cli import ArgumentParser, int_list, run_program


def build_parser() -> argparse.ArgumentParser:
    bench = ArgumentParser(prog="mecjax bench", description="throughput benchmarks")
    bench.add_argument("what", choices=["env", "optim", "scale", "train", "schedulers"],
                       help="what to benchmark")
    bench.add_argument("--ns", type=int_list, help="device counts, e.g. 50,150,1000")
    bench.add_argument("--batches", type=int_list, help="instance batch sizes, e.g. 1,64,1024")
    bench.add_argument("--budget", type=float, default=4e6,
                       help="device-steps per timed rollout (sets the slot count)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    bench.add_argument("--out", default="results/benchmarks", help="where tables are written")
    bench.add_argument("--no-write", action="store_true", help="print only")
    bench.add_argument("--population", type=int, default=30, help="optim: population / particles")
    bench.add_argument("--iterations", type=int, default=100, help="optim: generations per decision")
    bench.add_argument("--numpy-budget", type=float,
                       help="device-steps per timed NumPy run (env, default 5e7: fewer slots "
                            "where the JAX run's would exceed it) or device evaluations per "
                            "timed NumPy QIO run (optim, default 1e7: generations timed, "
                            "scaled linearly to --iterations)")
    bench.add_argument("--methods", help="schedulers: comma-separated scheduler names "
                                         "(default: every method of the report)")
    bench.add_argument("--time-limit", type=float, default=20.0,
                       help="optim: stop repeating once this many seconds were timed")
    bench.add_argument("--chunk", type=int,
                       help="optim: instances per vmapped block of a batched search (default 64 "
                            "on a CPU, the whole batch on an accelerator; 0: one vmap)")
    return bench


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats} must be >= 1")
    if args.chunk is not None and args.chunk < 0:
        raise UserError(f"--chunk {args.chunk} must be >= 0 (0: one vmap over the batch)")
    out = None if args.no_write else args.out
    if args.what == "env":
        from benchmarks.env import bench_env

        bench_env(ns=args.ns or (50, 150, 1000), batches=args.batches or (1, 64, 1024, 8192),
                  out_dir=out, budget=args.budget, repeats=args.repeats,
                  numpy_budget=args.numpy_budget or 5e7)
    elif args.what == "optim":
        from benchmarks.optim import bench_optim

        bench_optim(ns=args.ns or (50, 150), batches=args.batches or (1, 64, 1024), out_dir=out,
                    repeats=args.repeats, population=args.population,
                    iterations=args.iterations, numpy_budget=args.numpy_budget or 1e7,
                    time_limit_s=args.time_limit,
                    chunk=args.chunk)
    elif args.what == "train":
        from benchmarks.train import bench_train

        bench_train(ns=args.ns or (50, 150), out_dir=out, repeats=args.repeats)
    elif args.what == "schedulers":
        from benchmarks.schedulers import bench_schedulers

        bench_schedulers(ns=args.ns or (50, 150), instances=(args.batches or (32,))[0],
                         repeats=min(args.repeats, 2), out_dir=out,
                         methods=tuple(args.methods.split(",")) if args.methods else None)
    else:
        from benchmarks.scale import bench_scale

        bench_scale(out_dir=out, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("bench", main))
