"""Pure planning for a vector env: seeds, env splits, relay tree, worker counts, spin budget.

Nothing here starts a process or touches a pipe, so every rule is unit-tested on its own and
called from each path that needs it (local, async, Ray).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from gymnasium.vector import AutoresetMode

from shmenv.sysinfo import usable_cores

DEFAULT_WORKER_SPIN_US = 500.0
DEFAULT_RELAY_FANOUT = 8


def env_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Each env's seed: ``seed + i`` for an int, the sequence itself (None entries leave
    that env unseeded), or None for all."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds: list[int | None] = [None if s is None else int(s) for s in seed]
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for {num_envs} envs")
    return seeds


def split_envs(num_envs: int, num_workers: int) -> list[tuple[int, int]]:
    """Contiguous env ranges ``(start, stop)``, sizes differing by at most one."""
    base, extra = divmod(num_envs, num_workers)
    ranges, start = [], 0
    for w in range(num_workers):
        stop = start + base + (1 if w < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def relay_tree(num_workers: int, fanout: int) -> list[list[int]]:
    """The relay tree's children of each worker: worker 0 is the root, and workers are
    numbered in pre-order, so each subtree is a run of consecutive workers (hence of
    consecutive envs) and a relayed command or reply for it is one contiguous slice.
    Subtrees under one parent differ in size by at most one."""
    children: list[list[int]] = [[] for _ in range(num_workers)]

    def build(root: int, size: int) -> None:  # workers root .. root + size - 1
        below = size - 1
        count = min(fanout, below)
        first = root + 1
        for k in range(count):
            part = below // count + (1 if k < below % count else 0)
            children[root].append(first)
            build(first, part)
            first += part

    if num_workers:
        build(0, num_workers)
    return children


def check_relay_fanout(relay_fanout: int) -> int:
    if (isinstance(relay_fanout, bool) or not isinstance(relay_fanout, (int, np.integer))
            or relay_fanout < 0):
        raise ValueError(f"relay_fanout must be an int >= 0, got {relay_fanout!r}")
    return int(relay_fanout)


def check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    """A wait's limit in seconds: None (wait as long as it takes) or a finite number > 0."""
    if timeout is None:
        return None
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer,
                                                               np.floating))
            or not math.isfinite(timeout) or timeout <= 0):
        raise ValueError(f"{what} must be None (no limit) or a finite number of seconds "
                         f"> 0, got {timeout!r}")
    return float(timeout)


def relay_parents(children: Sequence[Sequence[int]]) -> list[int | None]:
    """Each worker's parent in the relay tree (None for the root and unrelayed workers)."""
    parents: list[int | None] = [None] * len(children)
    for parent, kids in enumerate(children):
        for child in kids:
            parents[child] = parent
    return parents


def subtree_stops(ranges: Sequence[tuple[int, int]], children: Sequence[Sequence[int]]
                  ) -> list[int]:
    """Per worker, the end of the env range its relay subtree covers."""
    stops = [stop for _start, stop in ranges]
    for index in reversed(range(len(ranges))):  # children come after their parent
        if children[index]:
            stops[index] = stops[children[index][-1]]
    return stops


def check_num_envs(num_envs: int) -> int:
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return int(num_envs)


def check_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """The autoreset mode shmenv supports: SAME_STEP or NEXT_STEP."""
    mode = AutoresetMode(mode)
    if mode == AutoresetMode.DISABLED:
        raise ValueError("autoreset_mode DISABLED is not supported; use SAME_STEP "
                         "(the labml design's behaviour) or NEXT_STEP")
    return mode


def plan_workers(num_envs: int, batch_size: int, num_workers: int | None, cores: int) -> int:
    """How many worker processes: for async batches see :func:`plan_async_workers`, else
    one per core up to one per env (or ``num_workers`` if given and valid)."""
    if batch_size < num_envs:  # async: whole workers per batch (see shmenv.batching)
        num_workers = plan_async_workers(num_envs, batch_size, num_workers, cores)
    if num_workers is None:
        num_workers = min(num_envs, cores)
    if not isinstance(num_workers, (int, np.integer)) or not 1 <= num_workers <= num_envs:
        raise ValueError(f"num_workers must be an int in [1, num_envs={num_envs}], "
                         f"got {num_workers!r}")
    return int(num_workers)


def check_batch_size(batch_size: int | None, num_envs: int) -> int:
    """``batch_size`` as an int in [1, num_envs]; None means num_envs (synchronous)."""
    if batch_size is None:
        return num_envs
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or not 1 <= batch_size <= num_envs):
        raise ValueError(f"batch_size must be an int in [1, num_envs={num_envs}], "
                         f"got {batch_size!r}")
    return int(batch_size)


def plan_async_workers(num_envs: int, batch_size: int, num_workers: int | None,
                       cores: int) -> int:
    """Number of workers for async batches of ``batch_size`` (see :mod:`shmenv.batching`).

    Every worker gets ``num_envs / num_workers`` envs, and that number must divide
    ``batch_size`` so that each batch is a whole number of workers. By default: the largest
    worker size that still gives at least ``min(num_envs, cores)`` workers.
    """
    common = math.gcd(num_envs, batch_size)
    valid = [num_envs // size for size in range(1, common + 1) if common % size == 0]
    if num_workers is None:
        wanted = min(num_envs, cores)
        return min(w for w in valid if w >= wanted)
    if num_workers not in valid:
        raise ValueError(
            f"num_workers={num_workers!r} cannot serve batches of {batch_size} out of "
            f"{num_envs} envs: each worker steps all its envs at once, so workers must be "
            f"equal-sized and a whole number of them must make a batch. "
            f"Valid num_workers: {sorted(valid)} (or leave it unset)."
        )
    return int(num_workers)


def spin_budget(worker_spin_us: float | None, num_workers: int) -> float:
    """The workers' spin-then-sleep budget in µs: by default spin only when every worker
    can have a core of its own (never on an oversubscribed machine)."""
    if worker_spin_us is None:
        return DEFAULT_WORKER_SPIN_US if num_workers <= usable_cores() else 0.0
    if (isinstance(worker_spin_us, bool) or not isinstance(worker_spin_us, (int, float))
            or not 0 <= worker_spin_us < math.inf):  # also rejects NaN
        raise ValueError(f"worker_spin_us must be a finite number >= 0, got {worker_spin_us!r}")
    return float(worker_spin_us)
