"""The generic env's outputs: observations, rewards, flags and merged infos from the block.

Observations and the reward and flag columns are numpy copies of block views (the
observations are the views themselves with ``copy=False``); infos come pickled, only from
the envs that had one, and are merged as gymnasium merges them (:mod:`shmenv.anyinfos`). A batch
of some envs (async ``recv``) is the same with the rows of those envs.
"""

from __future__ import annotations

import pickle
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import Space
from gymnasium.vector.utils import concatenate, create_empty_array

from shmenv.anyinfos import InfoMerger
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

    def __init__(self, views: BlockViews, space: Space, num_envs: int, copy: bool) -> None:
        self.views = views
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
        merge = self._merger.merge
        if self.obs_in_block:
            obs = self.views.obs
            if self.copy:
                obs = obs.copy() if isinstance(obs, np.ndarray) else deepcopy(obs)
            for payload in payloads:
                if payload:
                    infos = merge(infos, pickle.loads(payload))
            return obs, infos
        every_obs: list[Any] = []
        for payload in payloads:
            worker_obs, packed = pickle.loads(payload)
            every_obs.extend(worker_obs)
            if packed is not None:
                infos = merge(infos, packed)
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
        if self.obs_in_block:
            for _first, payload in payloads:
                if payload:
                    infos = merger.merge(infos, pickle.loads(payload), position)
            obs = take(views.obs, rows)
        else:
            for first, payload in payloads:
                worker_obs, packed = pickle.loads(payload)
                self._last_obs[first:first + len(worker_obs)] = worker_obs
                if packed is not None:
                    infos = merger.merge(infos, packed, position)
            buffer: Any = create_empty_array(self.space, n=len(env_ids), fn=np.zeros)
            obs = concatenate(self.space, [self._last_obs[env] for env in env_ids], buffer)
        infos["env_id"] = env_ids
        return (obs, views.rewards[rows].copy(), views.terminated[rows].copy(),
                views.truncated[rows].copy(), infos)
