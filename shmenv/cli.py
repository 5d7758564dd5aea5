"""The ``shmenv`` command (also ``python -m shmenv``): a thin dispatcher.

Each subcommand's work lives in its own module; this file only parses arguments and sets
each subparser's ``func``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _run_record(args: argparse.Namespace) -> int:
    from shmenv.record import run

    return run(args)


def _run_info(args: argparse.Namespace) -> int:
    from shmenv.sysinfo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from shmenv import __version__
    from shmenv.benchmarks import command as bench_command

    parser = argparse.ArgumentParser(
        prog="shmenv",
        description="Many Atari games in parallel processes, observations in shared memory.",
    )
    parser.add_argument("--version", action="version", version=f"shmenv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_command.add_parser(commands)

    record = commands.add_parser(
        "record", help="save what the agent sees (the frame stack side by side) as GIF/PNG",
        description="Play random actions and write each step's frame stack, side by side: "
                    ".gif is an animation, .png a strip of evenly spaced steps.")
    record.add_argument("--game", default="Pong", help="any ALE game name (default: Pong)")
    record.add_argument("--steps", type=int, default=300, help="agent steps to play")
    record.add_argument("--out", default="pong.gif", help="output .gif or .png")
    record.add_argument("--seed", type=int, default=0)
    record.add_argument("--scale", type=int, default=2, help="pixel enlargement factor")
    record.add_argument("--rows", type=int, default=8, help="steps shown in a .png strip")
    record.set_defaults(func=_run_record)

    info = commands.add_parser(
        "info", help="versions, cores, free /dev/shm, block size, games",
        description="Print what shmenv sees on this machine.")
    info.add_argument("--num-envs", type=int, default=8,
                      help="show the shared block size this many envs need (default: 8)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_run_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # bare `shmenv`: show the commands
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, ImportError, OSError) as exc:
        # Bad input or a missing optional package: say what and how to fix, no traceback.
        print(f"shmenv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
