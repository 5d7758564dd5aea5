"""The ``shmenv`` command: a thin dispatcher. Each subcommand registers its own parser and
handler (``add_parser(subparsers)`` setting ``func``), so adding one is a few lines here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from shmenv import __version__
    from shmenv.benchmarks import command as bench_command

    parser = argparse.ArgumentParser(
        prog="shmenv",
        description="Many Atari games in parallel processes, observations in shared memory.",
    )
    parser.add_argument("--version", action="version", version=f"shmenv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as exc:  # bad flags that argparse could not catch
        print(f"shmenv: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
