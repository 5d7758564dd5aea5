"""``shmenv info``: what this machine offers shmenv, for bug reports and capacity planning.

Versions of shmenv and the packages it runs on, usable cores, free shared memory, the
shared block a given number of envs needs, and the games ale-py ships.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("shmenv", "gymnasium", "ale-py", "numpy", "opencv-python")


def _version(package: str) -> str:
    if package == "shmenv":
        from shmenv import __version__

        return __version__
    if package == "opencv-python":  # wheels come under several names; ask cv2 itself
        try:
            import cv2

            return cv2.__version__
        except ImportError:
            return "not installed"
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def collect_info(num_envs: int = 8) -> dict[str, Any]:
    """Everything ``shmenv info`` prints, as a dict."""
    from shmenv.block import SHM_DIR, BlockLayout, shm_free_bytes
    from shmenv.games import GameOptions, known_games

    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    layout = BlockLayout(num_envs, GameOptions().obs_shape)
    return {
        "versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": {"usable": usable_cores(), "total": os.cpu_count()},
        "shm": {"path": SHM_DIR, "free_bytes": shm_free_bytes()},
        "block": {"num_envs": num_envs, "obs_shape": list(layout.obs_shape),
                  "slot_bytes": layout.slot_bytes, "final_obs_offset": layout.final_obs_offset,
                  "nbytes": layout.nbytes},
        "games": list(known_games()),
    }


def _mib(nbytes: int | None) -> str:
    return "unknown" if nbytes is None else f"{nbytes:,} bytes ({nbytes / 2**20:.1f} MiB)"


def format_info(info: dict[str, Any]) -> str:
    block, shm = info["block"], info["shm"]
    lines = ["shmenv info", ""]
    lines += [f"  {name:<14} {version}" for name, version in info["versions"].items()]
    lines += [f"  {'python':<14} {info['python']}", f"  {'platform':<14} {info['platform']}",
              "",
              f"  cores          {info['cores']['usable']} usable of {info['cores']['total']}",
              f"  free {shm['path']:<9} {_mib(shm['free_bytes'])}",
              f"  block for {block['num_envs']} envs: {_mib(block['nbytes'])} "
              f"(obs + final_obs, {block['slot_bytes']:,} bytes per "
              f"{'x'.join(map(str, block['obs_shape']))} slot)"]
    free = shm["free_bytes"]
    if free is not None and free < block["nbytes"]:
        lines.append(f"  WARNING: {shm['path']} is too small for {block['num_envs']} envs")
    games = info["games"]
    lines += ["", f"  {len(games)} games: " + ", ".join(games)]
    return "\n".join(lines)


def run(args: Any) -> int:
    """CLI entry: ``args`` has num_envs and json."""
    info = collect_info(args.num_envs)
    if args.json:
        import json

        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0
