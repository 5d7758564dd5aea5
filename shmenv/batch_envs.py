"""Which envs an async batch is: env ids to the whole workers that step them, and back.

A worker steps all its envs per command, so ``send(actions, env_ids)`` must name whole
workers, and ``recv()`` returns the envs of whole workers: a slice of the reply rows when
the workers are adjacent (a view of the block), else an index array. Pure bookkeeping over
the workers' env ranges, no process or pipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from shmenv.actions import check_env_ids


class BatchEnvs:
    """Env ids and the workers that own them, for async batches.

    ``action_slots[i]`` is env i's action in the main's command buffer
    (:class:`shmenv.all_envs.CommandFrames`). The ids the last :meth:`envs_of` returned are
    read-only, so that :meth:`workers_of` can trust them by identity and skip re-deriving
    their workers: the common case of an envpool loop, which sends back exactly the
    ``infos["env_id"]`` it received.
    """

    def __init__(self, ranges: Sequence[tuple[int, int]], action_slots: np.ndarray) -> None:
        self._ranges = list(ranges)
        self._action_slots = action_slots
        self.num_envs = ranges[-1][1]
        self.worker_sizes = np.array([stop - start for start, stop in ranges])
        self._worker_of_env = np.repeat(np.arange(len(ranges)), self.worker_sizes)
        self._worker_env_ids = [np.arange(start, stop) for start, stop in ranges]
        self._env_ids = np.arange(self.num_envs)
        self._returned_ids: np.ndarray | None = None
        self._returned_workers: list[int] = []
        self._returned_slots: np.ndarray | None = None

    def workers_of(self, env_ids: Any) -> tuple[np.ndarray, list[int], np.ndarray]:
        """The checked ``env_ids`` (None: every env), the workers they make up (whole ones,
        or a ValueError) and the command slots of their actions."""
        if env_ids is not None and env_ids is self._returned_ids:  # read-only: unchanged
            return cast(np.ndarray, env_ids), self._returned_workers, \
                cast(np.ndarray, self._returned_slots)
        ids = self._env_ids if env_ids is None else check_env_ids(env_ids, self.num_envs)
        workers = whole_workers(ids, self._worker_of_env, self.worker_sizes, self._ranges)
        return ids, workers, self._action_slots[ids]

    def envs_of(self, workers: list[int]) -> tuple[slice | np.ndarray, np.ndarray]:
        """The envs of ``workers`` (sorted) as a selection of the reply rows (a slice for
        adjacent workers) and their ids (read-only)."""
        first, last = workers[0], workers[-1]
        if last - first + 1 == len(workers):  # adjacent workers: a view of the block
            start, stop = self._ranges[first][0], self._ranges[last][1]
            envs: slice | np.ndarray = slice(start, stop)
            env_ids = self._env_ids[start:stop].copy()
        else:
            env_ids = envs = np.concatenate([self._worker_env_ids[w] for w in workers])
        self._returned_slots = self._action_slots[envs]
        env_ids.flags.writeable = False  # so that workers_of() can trust it by identity
        self._returned_ids, self._returned_workers = env_ids, workers
        return envs, env_ids


def whole_workers(ids: np.ndarray, worker_of_env: np.ndarray, worker_sizes: np.ndarray,
                  ranges: Sequence[tuple[int, int]]) -> list[int]:
    """The workers whose envs ``ids`` lists, which must be all of each one's envs
    (``worker_of_env[i]``: env i's worker; ``worker_sizes[w]``: worker w's env count)."""
    counts = np.bincount(worker_of_env[ids], minlength=len(ranges))
    partial = np.flatnonzero((counts > 0) & (counts != worker_sizes))
    if partial.size:
        start, stop = ranges[partial[0]]
        raise ValueError(
            f"env_ids must list whole workers: envs {start}-{stop - 1} are stepped "
            f"together by one worker, but only {counts[partial[0]]} of them were given. "
            "Send exactly the env ids a recv() returned."
        )
    return np.flatnonzero(counts).tolist()
