"""The ``mecjax`` command."""

from __future__ import annotations

import argparse
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


def _bench(args: argparse.Namespace) -> int:
    if args.what == "env":
        from mecjax.bench import bench_env

        bench_env(ns=args.ns or (50, 150, 1000), batches=args.batches or (1, 64, 1024, 8192),
                  out_dir=None if args.no_write else args.out, budget=args.budget,
                  repeats=args.repeats)
        return 0
    raise SystemExit(f"unknown benchmark {args.what!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mecjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="throughput benchmarks against NumPy")
    bench.add_argument("what", choices=["env"], help="what to benchmark")
    bench.add_argument("--ns", type=_ints, help="device counts, e.g. 50,150,1000")
    bench.add_argument("--batches", type=_ints, help="instance batch sizes, e.g. 1,64,1024")
    bench.add_argument("--budget", type=float, default=4e6,
                       help="device-steps per timed rollout (sets the slot count)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    bench.add_argument("--out", default="results/benchmarks", help="where tables are written")
    bench.add_argument("--no-write", action="store_true", help="print only")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
