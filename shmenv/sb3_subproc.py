"""SB3's ``SubprocVecEnv`` for any gymnasium env, on a ``shmenv.AsyncVectorEnv``.

Import it from :mod:`shmenv.sb3` (``from shmenv.sb3 import SubprocVecEnv``); it lives here
so that the Atari adapter and the any-env one each read in one file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import Env
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import DictInfoToList
from stable_baselines3.common.env_util import is_wrapped
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
    as in SB3 (``seed(s)`` gives env i the seed ``s + i``).
    ``get_attr``, ``set_attr``, ``has_attr``, ``env_method`` and ``env_is_wrapped`` do in the
    workers what SB3's workers do, for the envs ``indices`` names: each env function is
    wrapped so that its env carries SB3's commands (an attribute, not a wrapper: stepping
    is untouched), reached by one gymnasium ``call``.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Env]], start_method: str | None = None,
                 **options: Any) -> None:
        self.vector_env = AsyncVectorEnv([_SB3EnvFn(fn, i) for i, fn in enumerate(env_fns)],
                                         context=start_method,
                                         autoreset_mode=AutoresetMode.SAME_STEP, **options)
        self._lists = DictInfoToList(self.vector_env)  # gymnasium's dict-of-arrays -> per env
        self._actions: Any = None
        super().__init__(self.vector_env.num_envs, self.vector_env.single_observation_space,
                         self.vector_env.single_action_space)

    def reset(self) -> Any:
        """Reset every env with its seed and options, as SB3 does. One vector reset carries
        one options dict, so envs given different options reset in groups, one masked
        vector reset per distinct options dict (``reset_mask``)."""
        groups: list[tuple[dict[str, Any], list[int]]] = []
        for i, options in enumerate(self._options):
            group = next((g for g in groups if g[0] == options), None)
            if group is None:
                groups.append((options, [i]))
            else:
                group[1].append(i)
        seeds: Any = list(self._seeds)
        if len(groups) == 1:
            obs, self.reset_infos = self._lists.reset(seed=seeds,
                                                      options=dict(groups[0][0]) or None)
        else:
            self.reset_infos = [{} for _ in range(self.num_envs)]
            for options, envs in groups:
                mask = np.zeros(self.num_envs, dtype=bool)
                mask[envs] = True
                obs, infos = self._lists.reset(seed=seeds,
                                               options={**options, "reset_mask": mask})
                for i in envs:
                    self.reset_infos[i] = infos[i]
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

    def _in_workers(self, command: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        """What SB3's worker answers to ``command`` for each env of ``indices``, in that
        order (an index given twice runs twice), from one gymnasium ``call`` of every env's
        :class:`_WorkerCommands`."""
        targets = list(self._get_indices(indices))
        answers = [iter(each) for each in self.vector_env.call(_COMMANDS, command, targets,
                                                               *args)]
        return [next(answers[i]) for i in targets]

    def has_attr(self, attr_name: str) -> bool:
        """Whether every env has ``attr_name`` (a missing one is no error, as in SB3)."""
        return all(self._in_workers("has_attr", None, attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Each env's ``get_wrapper_attr(attr_name)``, as is (a method is not called)."""
        return self._in_workers("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """``setattr`` on the outermost wrapper of the envs ``indices``, as SB3's worker
        does (gymnasium's ``set_attr`` would set it where the attribute is found)."""
        self._in_workers("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` of the envs ``indices`` only; their results in that order."""
        return self._in_workers("env_method", indices, method_name, method_args,
                                method_kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Whether each env of ``indices`` is wrapped in ``wrapper_class``, asked of the env
        in its worker (SB3's ``is_wrapped``)."""
        return self._in_workers("is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(f"The render mode is {self.render_mode}, but this method assumes "
                          "it is `rgb_array` to obtain images.", stacklevel=2)
            return [None] * self.num_envs
        return list(self.vector_env.render() or [None] * self.num_envs)

    def __repr__(self) -> str:
        return f"shmenv.sb3.SubprocVecEnv({self.vector_env!r})"


_COMMANDS = "_shmenv_sb3_commands"  # the attribute each env's _WorkerCommands is under


class _SB3EnvFn:
    """Env function ``index``, whose env also carries a :class:`_WorkerCommands`, so that
    SB3's per-env commands run in shmenv's worker through gymnasium's ``call``."""

    def __init__(self, env_fn: Callable[[], Env], index: int) -> None:
        self.env_fn = env_fn
        self.index = index

    def __call__(self) -> Env:
        env = self.env_fn()
        setattr(env, _COMMANDS, _WorkerCommands(env, self.index))
        return env


class _WorkerCommands:
    """SB3's worker commands for one env (``get_attr``, ``set_attr``, ``has_attr``,
    ``env_method``, ``is_wrapped``), run once for each time the env's index is among
    ``targets``: every env receives the call, only the targeted ones act."""

    def __init__(self, env: Env, index: int) -> None:
        self.env = env
        self.index = index

    def __call__(self, command: str, targets: list[int], *args: Any) -> list[Any]:
        return [self._run(command, *args) for _ in range(targets.count(self.index))]

    def _run(self, command: str, *args: Any) -> Any:
        env = self.env
        if command == "get_attr":
            return env.get_wrapper_attr(args[0])
        if command == "has_attr":
            try:
                env.get_wrapper_attr(args[0])
            except AttributeError:
                return False
            return True
        if command == "set_attr":
            return setattr(env, *args)
        if command == "env_method":
            name, method_args, method_kwargs = args
            return env.get_wrapper_attr(name)(*method_args, **method_kwargs)
        if command == "is_wrapped":
            return is_wrapped(env, args[0])
        raise ValueError(f"unknown SB3 worker command {command!r}")
