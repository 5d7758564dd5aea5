"""The generic env's outputs: observations, rewards, flags and merged infos from the block.

Observations and the reward and flag columns are numpy copies of block views (the
observations are the views themselves with ``copy=False``); infos are copied from the
block's info columns or come pickled, only from the envs that had one, and are merged as
gymnasium merges them (:mod:`shmenv.anyinfos`). A batch of some envs (async ``recv``) is
the same with the rows of those envs.
"""

from __future__ import annotations

import pickle
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import Space
from gymnasium.vector.utils import concatenate, create_empty_array

from shmenv.anyinfos import IN_BLOCK, InfoMerger, Packed, column_views
from shmenv.anyspaces import BlockViews

StepResult = tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


def take(views: Any, rows: slice | np.ndarray) -> Any:
    """A copy of the rows ``rows`` of a nested batch."""
    if isinstance(views, np.ndarray):
        return views[rows].copy() if isinstance(rows, slice) else views[rows]
    if isinstance(views, dict):
        return {key: take(value, rows) for key, value in views.items()}
    return tuple(take(value, rows) for value in views)


class AnyOutputs:
    """Turns the workers' replies into ``(obs, rewards, terminations, truncations, infos)``."""

    def __init__(self, views: BlockViews, space: Space, ranges: list[tuple[int, int]],
                 copy: bool) -> None:
        num_envs = ranges[-1][1]
        self.views = views
        self.ranges = [slice(start, stop) for start, stop in ranges]
        self._worker_of = {start: k for k, (start, _stop) in enumerate(ranges)}
        # Each worker's info columns as its last reply with block_keys named them, and
        # those of every worker when they all name the same (else None).
        self._columns: list[list[tuple[str, np.ndarray]]] = [[] for _ in ranges]
        self._block_keys: list[Any] = [None] * len(ranges)
        self._same_columns: list[tuple[str, np.ndarray]] | None = None
        self.space = space
        self.num_envs = num_envs
        self.copy = copy
        self.obs_in_block = views.obs is not None
        # Pickled observations are concatenated here, as gymnasium's shared_memory=False
        # does (a custom space has no buffer: concatenate returns a tuple for it).
        self._obs_buffer = (None if self.obs_in_block
                            else create_empty_array(space, n=num_envs, fn=np.zeros))
        self._last_obs: list[Any] = [None] * num_envs
        self._merger = InfoMerger(num_envs)

    def reset_result(self, payloads: list[bytes]) -> tuple[Any, dict[str, Any]]:
        obs, infos = self._obs_and_infos(payloads)
        return obs, infos

    def step_result(self, payloads: list[bytes]) -> StepResult:
        views = self.views
        rewards = views.rewards.copy()
        terminations = views.terminated.copy()
        truncations = views.truncated.copy()
        obs, infos = self._obs_and_infos(payloads)
        return obs, rewards, terminations, truncations, infos

    def _obs_and_infos(self, payloads: list[bytes]) -> tuple[Any, dict[str, Any]]:
        infos: dict[str, Any] = {}
        merger, ranges = self._merger, self.ranges
        if self.obs_in_block:
            obs = self.views.obs
            if self.copy:
                obs = obs.copy() if isinstance(obs, np.ndarray) else deepcopy(obs)
            if self._same_columns and payloads.count(IN_BLOCK) == len(payloads):
                return obs, merger.copy_block(self._same_columns)  # MuJoCo's every step
            for k, payload in enumerate(payloads):
                if payload == IN_BLOCK:  # one numpy assignment per info column
                    merger.merge_block(infos, self._columns[k], ranges[k], ranges[k])
                elif payload:
                    infos = self._merge(merger, infos, k, pickle.loads(payload), ranges[k])
            return obs, infos
        every_obs: list[Any] = []
        for k, payload in enumerate(payloads):
            worker_obs, packed = pickle.loads(payload)
            every_obs.extend(worker_obs)
            if packed is not None:
                infos = self._merge(merger, infos, k, packed, ranges[k])
        self._obs_buffer = concatenate(self.space, every_obs,
                                       self._obs_buffer)  # type: ignore[arg-type]
        return (deepcopy(self._obs_buffer) if self.copy else self._obs_buffer), infos

    def batch_result(self, payloads: list[tuple[int, bytes]], rows: slice | np.ndarray,
                     env_ids: np.ndarray) -> StepResult:
        """The outputs of the envs ``env_ids`` (rows ``rows`` of the block), from their
        workers' ``(first env, payload)`` replies; ``infos["env_id"]`` names them."""
        views = self.views
        merger = InfoMerger(len(env_ids))
        position = {int(env): k for k, env in enumerate(env_ids)}
        infos: dict[str, Any] = {}
        for first, payload in payloads:
            k = self._worker_of[first]
            envs = self.ranges[k]
            at = slice(position[first], position[first] + envs.stop - envs.start)
            if payload == IN_BLOCK:
                merger.merge_block(infos, self._columns[k], envs, at)
                continue
            if not payload:
                continue
            if self.obs_in_block:
                packed = pickle.loads(payload)
            else:
                worker_obs, packed = pickle.loads(payload)
                self._last_obs[first:first + len(worker_obs)] = worker_obs
            if packed is not None:
                infos = self._merge(merger, infos, k, packed, at, position)
        if self.obs_in_block:
            obs = take(views.obs, rows)
        else:
            buffer: Any = create_empty_array(self.space, n=len(env_ids), fn=np.zeros)
            obs = concatenate(self.space, [self._last_obs[env] for env in env_ids], buffer)
        infos["env_id"] = env_ids
        return (obs, views.rewards[rows].copy(), views.terminated[rows].copy(),
                views.truncated[rows].copy(), infos)

    def _merge(self, merger: InfoMerger, infos: dict[str, Any], k: int, packed: Packed,
               rows: slice, position: dict[int, int] | None = None) -> dict[str, Any]:
        """Merge worker ``k``'s packed infos (its envs are the rows ``rows`` of the batch),
        first learning its info columns if it names them."""
        block_keys, skipped = packed[3], packed[4]
        if block_keys is not None:
            if block_keys != self._block_keys[k]:
                self._columns[k] = column_views(self.views.infos, block_keys)
                self._block_keys[k] = block_keys
                same = self._block_keys.count(block_keys) == len(self._block_keys)
                self._same_columns = self._columns[k] if same else None
            envs = self.ranges[k]
            merger.merge_block(infos, self._columns[k], envs, rows)
            if skipped:  # envs whose infos were listed instead (they just reset): not theirs
                merger.clear_rows(infos, self._columns[k],
                                  [rows.start + env - envs.start for env in skipped])
        return merger.merge(infos, packed, position)
