"""Step outputs: the reply records turned into gymnasium's ``(obs, rewards, ..., infos)``.

Every output is a copy of a reply column, made without per-env Python work: the workers
already zero the episode columns of envs that did not end and send ``done``. Outputs are
built by copying because after the emulators ran, the main runs with cold caches, and
numpy's copy path (warm after the first column) costs a fraction of a first ufunc,
reduction, ``np.ones`` or fancy index (~20 µs each here, measured).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shmenv.block import SharedBlock
from shmenv.protocol import REPLY_DTYPE

StepOutput = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class StepOutputs:
    """The reply record array the workers' replies are read into, and the outputs built
    from it. ``envs`` selects rows: None for every env (the synchronous step), a slice for
    adjacent workers or an index array for scattered ones (async batches)."""

    def __init__(self, block: SharedBlock, same_step: bool, copy: bool) -> None:
        num_envs = block.layout.num_envs
        self._block = block
        self._same_step = same_step
        self._copy = copy
        self.replies = np.zeros(num_envs, dtype=REPLY_DTYPE)
        self._env_ids = np.arange(num_envs)
        # Column views of the records, made once: results() copies them.
        self._columns = {name: self.replies[name] for name in REPLY_DTYPE.names or ()}
        for flag in ("terminated", "truncated", "done", "game_over", "episode_end"):
            self._columns[flag] = self._columns[flag].view(bool)
        # The info masks are all True every step: one read-only array serves them all.
        self._all_true = np.ones(num_envs, dtype=bool)
        self._all_true.flags.writeable = False
        self._all_none = np.full(num_envs, None, dtype=object)
        self._gathered_obs: np.ndarray | None = None  # reused by recv() of scattered envs

    def results(self, envs: slice | np.ndarray | None = None) -> StepOutput:
        """Outputs for the envs ``envs`` selects (None: every env, the synchronous step),
        from their latest replies: a copy of each reply column, and a Python loop only over
        the envs whose episode just ended (their ``final_obs``). The workers already zero
        the episode columns of envs that did not end and send ``done``, so every output is
        a copy (see the module docstring for why that matters)."""
        if envs is None:  # the synchronous step: no slicing, the ids are positions
            columns = self._columns
        else:
            columns = {name: column[envs] for name, column in self._columns.items()}
        rewards = columns["reward"].copy()
        terminations = columns["terminated"].copy()
        truncations = columns["truncated"].copy()
        dones = columns["done"].copy()
        count = len(rewards)
        every = self._all_true[:count]
        infos: dict[str, Any] = {"lives": columns["lives"].copy(), "_lives": every,
                                 "reward": columns["raw_reward"].copy(), "_reward": every,
                                 "terminated": columns["game_over"].copy(),
                                 "_terminated": every,
                                 "elapsed_step": columns["elapsed_step"].copy(),
                                 "_elapsed_step": every}
        if np.count_nonzero(dones):
            episode_end = columns["episode_end"]
            if np.count_nonzero(episode_end):
                infos["episode"] = {"r": columns["episode_return"].copy(),
                                    "l": columns["episode_length"].copy(),
                                    "t": columns["episode_time"].copy()}
                infos["_episode"] = episode_end.copy()
            if self._same_step:
                final_obs = self._all_none[:count].copy()
                batch_ids = self._env_ids if envs is None else self._env_ids[envs]
                rows = self._block.final_obs
                for position in dones.nonzero()[0].tolist():
                    final_obs[position] = rows[batch_ids[position]].copy()
                infos["final_obs"] = final_obs
                infos["_final_obs"] = dones.copy()
        return self.obs_for(envs), rewards, terminations, truncations, infos

    def obs_for(self, envs: slice | np.ndarray | None) -> np.ndarray:
        """The observations of ``envs``: a view for a range, one gather for a list."""
        obs = self._block.obs_readonly  # read-only views (see SharedBlock)
        if envs is None:
            return obs.copy() if self._copy else obs
        if isinstance(envs, slice):
            return obs[envs].copy() if self._copy else obs[envs]
        if self._copy:
            return obs[envs]
        if self._gathered_obs is None or len(self._gathered_obs) < len(envs):
            self._gathered_obs = np.empty((len(envs),) + obs.shape[1:], dtype=obs.dtype)
        return np.take(obs, envs, axis=0, out=self._gathered_obs[:len(envs)])
