"""``shmenv bench [coordination|startup|anyenv|layouts|profile]``: argument parsing and dispatch.

Plain ``shmenv bench`` is the throughput benchmark. Modules are imported only when their
suite runs, so ``shmenv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _outputs(parser: argparse.ArgumentParser, plot: bool = True) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    if plot:
        parser.add_argument("--plot", metavar="PATH", help="also draw a PNG plot")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from shmenv.benchmarks.anyenv import NAMES as ANYENV_NAMES
    from shmenv.benchmarks.throughput import NAMES, PUBLICATION, QUICK

    cores = os.cpu_count() or 1
    bench = subparsers.add_parser(
        "bench", help="measure env-steps/s against every peer and this machine's ceiling",
        description="Throughput of shmenv, its peers and this machine's ceiling (default: a "
                    "quick run, about a minute on 2 cores; --rounds 3 --seconds 10 --warmup 2 "
                    "for publication figures), or one of the other suites.")
    bench.add_argument("--game", default="Breakout")
    bench.add_argument("--num-envs", type=_positive_int, default=None,
                       help=f"default 4 × cores = {4 * cores}")
    publication = (f"publication figures: --rounds {PUBLICATION['rounds']} --seconds "
                   f"{PUBLICATION['seconds']:g} --warmup {PUBLICATION['warmup']:g}")
    bench.add_argument("--seconds", type=_positive_float, default=QUICK["seconds"],
                       help=f"timed seconds per contender per round (default "
                            f"{QUICK['seconds']:g}; {publication})")
    bench.add_argument("--rounds", type=_positive_int, default=QUICK["rounds"],
                       help=f"interleaved rounds; the table shows medians (default "
                            f"{QUICK['rounds']})")
    bench.add_argument("--warmup", type=float, default=QUICK["warmup"],
                       help=f"untimed seconds first (default {QUICK['warmup']:g})")
    bench.add_argument("--seed", type=int, default=47, help="env seeds and action stream")
    bench.add_argument("--only", metavar="A,B,...",
                       help=f"run only these contenders: {', '.join(NAMES)}")
    bench.add_argument("--async-pinning", action="store_true",
                       help="compare shmenv's sync step with async batches (batch_size = "
                            "envs / 2) and pinned workers (same as --only "
                            "shmenv,shmenv-async,shmenv-pinned,shmenv-async-pinned)")
    bench.add_argument("--drop-in", action="store_true",
                       help="compare the drop-in shmenv.Worker with the Pipe baseline in the "
                            "reference's send-to-all / receive-from-all loop, seeds "
                            "--seed + i (same as --only shmenv,pipe,dropin)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    _outputs(bench)
    bench.set_defaults(func=run_throughput)

    suites = bench.add_subparsers(dest="suite", metavar="SUITE")
    coord = suites.add_parser("coordination", help="main-process cost per env-step, zero-cost "
                              "game: shmenv vs gymnasium AsyncVectorEnv")
    coord.add_argument("--env-counts", type=_csv_ints, default=[8, 32, 64])
    coord.add_argument("--seconds", type=_positive_float, default=3.0)
    coord.add_argument("--rounds", type=_positive_int, default=3)
    coord.add_argument("--warmup", type=float, default=1.0)
    coord.add_argument("--workers", type=_csv_ints, default=[],
                       help="add shmenv rows with these worker counts, e.g. 8,64,256")
    coord.add_argument("--direct", action="store_true",
                       help="add each shmenv row again with relay_fanout=0 (the main writes "
                            "to and reads from every worker itself)")
    coord.add_argument("--async", dest="async_batch", action="store_true",
                       help="add async rows with batch_size = envs / 2 (send/recv)")
    coord.add_argument("--breakout", action="store_true",
                       help="add Breakout rows at 64 envs (the real game)")
    coord.add_argument("--cpu-affinity", action="store_true", help="pin shmenv's workers")
    coord.add_argument("--no-progress", action="store_true")
    _outputs(coord)
    coord.set_defaults(func=run_coordination)

    startup = suites.add_parser("startup", help="time from make() to reset() returned")
    startup.add_argument("--game", default="Breakout")
    startup.add_argument("--env-counts", type=_csv_ints, default=[8, 32])
    startup.add_argument("--rounds", type=_positive_int, default=3)
    startup.add_argument("--only", metavar="A,B,...")
    startup.add_argument("--no-progress", action="store_true")
    _outputs(startup)
    startup.set_defaults(func=run_startup)

    layouts = suites.add_parser("layouts", help="the memory-layout suite (a)-(f)")
    layouts.add_argument("--num-envs", type=_positive_int, default=8)
    layouts.add_argument("--seconds", type=_positive_float, default=0.5,
                         help="timed seconds per variant (default 0.5)")
    _outputs(layouts)
    layouts.set_defaults(func=run_layouts)

    anyenv = suites.add_parser(
        "anyenv", help="any gymnasium env: shmenv.AsyncVectorEnv vs gymnasium, SB3, envpool",
        description="Throughput of shmenv.AsyncVectorEnv on any gymnasium env against "
                    "gymnasium's AsyncVectorEnv and SyncVectorEnv, SB3's SubprocVecEnv, "
                    "envpool (where it has the env) and the no-coordination ceiling.")
    anyenv.add_argument("--env", default="CartPole-v1",
                        help="a gymnasium env id (default CartPole-v1; e.g. HalfCheetah-v5 "
                             "with gymnasium[mujoco])")
    anyenv.add_argument("--num-envs", type=_positive_int, default=64)
    anyenv.add_argument("--seconds", type=_positive_float, default=QUICK["seconds"],
                        help=f"timed seconds per contender per round (default "
                             f"{QUICK['seconds']:g}; {publication})")
    anyenv.add_argument("--rounds", type=_positive_int, default=QUICK["rounds"])
    anyenv.add_argument("--warmup", type=float, default=QUICK["warmup"])
    anyenv.add_argument("--seed", type=int, default=47, help="env seeds and action stream")
    anyenv.add_argument("--only", metavar="A,B,...",
                        help=f"run only these contenders: {', '.join(ANYENV_NAMES)}")
    anyenv.add_argument("--no-progress", action="store_true")
    _outputs(anyenv)
    anyenv.set_defaults(func=run_anyenv)

    profile = suites.add_parser("profile", help="where one env-step's microseconds go")
    profile.add_argument("--game", default="Breakout")
    profile.add_argument("--steps", type=_positive_int, default=3000)
    profile.add_argument("--maxpool", choices=["labml", "standard"], default="labml",
                         help="labml: the reference's max of two resized frames (shmenv's "
                              "default); standard: max of two full screens, then resize")
    _outputs(profile, plot=False)
    profile.set_defaults(func=run_profile)


def _finish(result: dict, args: argparse.Namespace, plot_fn=None) -> int:
    from shmenv.benchmarks import report

    if args.json:
        report.write_json(args.json, result)
    if plot_fn and getattr(args, "plot", None):
        plot_fn(result, args.plot)
    return 0


def run_throughput(args: argparse.Namespace) -> int:
    from shmenv.benchmarks import throughput

    only = args.only
    for flag, names in (("async_pinning", throughput.ASYNC_PINNING),
                        ("drop_in", throughput.DROP_IN)):
        if getattr(args, flag):
            if only:
                raise ValueError(f"--{flag.replace('_', '-')} picks its own contenders; "
                                 "drop --only and the other such flag")
            only = ",".join(names)
    result = throughput.run(game=args.game, num_envs=args.num_envs, seconds=args.seconds,
                            rounds=args.rounds, warmup=args.warmup, seed=args.seed,
                            only=only, show_progress=not args.no_progress)
    throughput.print_result(result)
    return _finish(result, args, throughput.plot)


def run_coordination(args: argparse.Namespace) -> int:
    from shmenv.benchmarks import coordination

    result = coordination.run(env_counts=args.env_counts, seconds=args.seconds,
                              rounds=args.rounds, warmup=args.warmup, workers=args.workers,
                              direct=args.direct, async_batch=args.async_batch,
                              breakout=args.breakout, cpu_affinity=args.cpu_affinity,
                              show_progress=not args.no_progress)
    coordination.print_result(result)
    return _finish(result, args, coordination.plot)


def run_startup(args: argparse.Namespace) -> int:
    from shmenv.benchmarks import startup

    result = startup.run(game=args.game, env_counts=args.env_counts, rounds=args.rounds,
                         only=args.only, show_progress=not args.no_progress)
    startup.print_result(result)
    return _finish(result, args, startup.plot)


def run_anyenv(args: argparse.Namespace) -> int:
    from shmenv.benchmarks import anyenv, throughput

    result = anyenv.run(env_id=args.env, num_envs=args.num_envs, seconds=args.seconds,
                        rounds=args.rounds, warmup=args.warmup, seed=args.seed,
                        only=args.only, show_progress=not args.no_progress)
    anyenv.print_result(result)
    return _finish(result, args, throughput.plot)  # the same contender bars


def run_layouts(args: argparse.Namespace) -> int:
    from shmenv.benchmarks import layouts

    result = layouts.run(num_envs=args.num_envs, seconds=args.seconds)
    layouts.print_result(result)
    return _finish(result, args, layouts.plot)


def run_profile(args: argparse.Namespace) -> int:
    from shmenv.benchmarks import profile_step

    result = profile_step.run(game=args.game, steps=args.steps, maxpool=args.maxpool)
    profile_step.print_result(result)
    return _finish(result, args)
