"""SB3's ``SubprocVecEnv`` for any gymnasium env, on a ``shmenv.AsyncVectorEnv``.

Import it from :mod:`shmenv.sb3` (``from shmenv.sb3 import SubprocVecEnv``); it lives here
so that the Atari adapter and the any-env one each read in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import Env
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import DictInfoToList
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from shmenv.anyenv import AsyncVectorEnv

__all__ = ["SubprocVecEnv"]


class SubprocVecEnv(VecEnv):
    """SB3's ``SubprocVecEnv`` for any env, on a ``shmenv.AsyncVectorEnv``: change the import
    (``from shmenv.sb3 import SubprocVecEnv``) and SB3 gets what its own class gives.

    ``start_method`` is the multiprocessing context, as in SB3; the keywords are
    ``shmenv.AsyncVectorEnv``'s (``num_workers``, ``cpu_affinity``, ``shared_memory``, ...).
    Each env's step is SB3's: ``dones = terminated | truncated``, a finished env's info is
    its last step's info plus ``"terminal_observation"`` and ``"TimeLimit.truncated"``, and
    its reset info goes to ``reset_infos``. Seeds and reset options are used once, per env,
    as in SB3 (``seed(s)`` gives env i the seed ``s + i``); envs given different options
    in one reset raise ValueError, because one vector reset carries one options dict.
    ``env_method`` calls every env (gymnasium's ``call``): ``indices`` must be None, and
    ``env_is_wrapped`` cannot see the wrappers inside the workers (False).
    """

    def __init__(self, env_fns: Sequence[Callable[[], Env]], start_method: str | None = None,
                 **options: Any) -> None:
        self.vector_env = AsyncVectorEnv(env_fns, context=start_method,
                                         autoreset_mode=AutoresetMode.SAME_STEP, **options)
        self._lists = DictInfoToList(self.vector_env)  # gymnasium's dict-of-arrays -> per env
        self._actions: Any = None
        super().__init__(self.vector_env.num_envs, self.vector_env.single_observation_space,
                         self.vector_env.single_action_space)

    def reset(self) -> Any:
        options = self._options
        if any(o != options[0] for o in options):
            raise ValueError(f"one reset gives every env the same options, got {options}")
        obs, self.reset_infos = self._lists.reset(seed=list(self._seeds),  # type: ignore[arg-type]
                                                  options=dict(options[0]) or None)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions) first")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, infos = self._lists.step(actions)
        dones = terminated | truncated
        time_limit = (truncated & ~terminated).tolist()
        for i in np.flatnonzero(dones):  # a finished env: its last step's info, as SB3's
            reset_info = infos[i]
            infos[i] = dict(reset_info.pop("final_info", {}))
            infos[i]["terminal_observation"] = reset_info.pop("final_obs")
            self.reset_infos[i] = reset_info
        for info, limit in zip(infos, time_limit):  # SB3 marks every env, every step
            info["TimeLimit.truncated"] = limit
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.vector_env.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        values = self.vector_env.get_attr(attr_name)
        return [values[i] for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` to ``value`` in the envs ``indices``. gymnasium's
        ``set_attr`` sets every env, so with ``indices`` the others are set to their own
        current values: the attribute must exist in every env."""
        values = (list(self.vector_env.get_attr(attr_name)) if indices is not None
                  else [None] * self.num_envs)
        for i in self._indices(indices):
            values[i] = value
        self.vector_env.set_attr(attr_name, values)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` on every env (gymnasium's ``call``); ``indices`` must be
        None."""
        if indices is not None:
            raise ValueError("shmenv calls a method on every env (gymnasium's call); pass "
                             "indices=None")
        return list(self.vector_env.call(method_name, *method_args, **method_kwargs))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """False: the wrappers live inside the worker processes, out of sight."""
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.vector_env.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def __repr__(self) -> str:
        return f"shmenv.sb3.SubprocVecEnv({self.vector_env!r})"
