"""Stable-Baselines3 adapters: an SB3 ``VecEnv`` over a :class:`~shmenv.ShmVectorEnv` (Atari,
:func:`make_vec_env`) or over a ``shmenv.AsyncVectorEnv`` (any env, :class:`SubprocVecEnv`).

::

    from stable_baselines3 import PPO
    from shmenv.sb3 import make_vec_env

    env = make_vec_env("Breakout", num_envs=8, seed=0)
    model = PPO("CnnPolicy", env).learn(100_000)

SB3 wants what its own ``SubprocVecEnv`` + ``Monitor`` give: ``step_wait`` returns
``(obs, rewards, dones, infos)`` with ``dones = terminated | truncated``, the next episode's
first observation in ``obs`` for envs that finished, and a list of per-env info dicts where
a finished env's dict holds ``"terminal_observation"`` (the last stack of the ended episode,
for bootstrapping truncated episodes), ``"TimeLimit.truncated"`` and ``"episode"``
(``{"r", "l", "t"}``, as ``Monitor`` writes it). This module builds exactly that from the
shared block's ``obs`` and ``final_obs`` and the workers' episode statistics.

Observations are copied out of the shared block on every step: SB3 keeps the previous
step's array (``_last_obs``) while the next step runs, and the block would overwrite it.

Requires the ``sb3`` extra (``pip install "shmenv[sb3]"`` after ``torch``).
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
from shmenv.vector import ShmVectorEnv

__all__ = ["ShmSB3VecEnv", "SubprocVecEnv", "make_vec_env"]


class ShmSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a :class:`~shmenv.ShmVectorEnv` (which must use ``SAME_STEP``
    autoreset, shmenv's default: SB3 expects the reset observation in the same step).

    Seeding follows SB3: ``env.seed(s)`` gives env i the seed ``s + i`` at the next
    ``reset()`` (this reloads every ROM, ~0.2 s per env).
    """

    def __init__(self, vector_env: ShmVectorEnv) -> None:
        if not isinstance(vector_env, ShmVectorEnv):
            raise TypeError(f"ShmSB3VecEnv wraps a shmenv.ShmVectorEnv, got "
                            f"{type(vector_env).__name__}; build one with "
                            "shmenv.sb3.make_vec_env(game, num_envs)")
        if vector_env.metadata["autoreset_mode"] != AutoresetMode.SAME_STEP:
            raise ValueError("SB3 expects SAME_STEP autoreset (the reset obs in the step "
                             "that ended the episode); create the ShmVectorEnv with "
                             "autoreset_mode='SameStep'")
        self.vector_env = vector_env
        self._actions: np.ndarray | None = None
        super().__init__(vector_env.num_envs, vector_env.single_observation_space,
                         vector_env.single_action_space)

    # ---------------------------------------------------------------- core API
    def reset(self) -> np.ndarray:
        """Reset every env (reseeding first if :meth:`seed` was called); returns a copy of
        the ``(num_envs, 4, 84, 84)`` uint8 stacks."""
        seeds = self._seeds
        if all(s is None for s in seeds):
            obs, _ = self.vector_env.reset()
        elif any(s is None for s in seeds):
            raise ValueError(f"either every env gets a seed or none does, got {seeds}")
        else:
            obs, _ = self.vector_env.reset(seed=[int(s) for s in seeds if s is not None])
        if any(self._options):
            raise ValueError(f"shmenv envs take no reset options, got {self._options}")
        self._reset_seeds()
        self._reset_options()
        return np.array(obs, copy=True)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions; the step itself runs in :meth:`step_wait`."""
        actions = np.asarray(actions)
        if actions.size == self.num_envs and actions.ndim > 1:
            actions = actions.reshape(self.num_envs)  # e.g. (n, 1) from a custom policy
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env; returns ``(obs, rewards, dones, infos)`` as SB3 expects (see the
        module docstring). ``obs`` is a copy; rewards are float32."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions) first")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.vector_env.step(actions)
        dones = terminated | truncated
        lives = info["lives"]
        infos: list[dict[str, Any]] = [{"lives": int(lives[i])} for i in range(self.num_envs)]
        if dones.any():
            # Under on_life_loss="end_episode" a lost life ends an episode but not the game:
            # only the end of a game carries "episode" (as SB3's Monitor under AtariWrapper).
            episode = info.get("episode")
            ended = info.get("_episode")
            final_obs = info["final_obs"]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final_obs[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if episode is not None and ended is not None and ended[i]:
                    infos[i]["episode"] = {"r": float(episode["r"][i]),
                                           "l": int(episode["l"][i]),
                                           "t": float(episode["t"][i])}
        return (np.array(obs, copy=True), rewards.astype(np.float32), dones, infos)

    def close(self) -> None:
        """Stop the workers and release the shared block."""
        self.vector_env.close()

    # ---------------------------------------------------------------- attributes
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Every env runs the same game with the same options, so an attribute has one
        value: ``render_mode`` (None), ``game``, ``options``, or a game option's name."""
        if attr_name == "render_mode":
            value: Any = None
        elif attr_name in ("game", "options"):
            value = getattr(self.vector_env, attr_name)
        elif hasattr(self.vector_env.options, attr_name):
            value = getattr(self.vector_env.options, attr_name)
        else:
            raise AttributeError(f"shmenv envs have no attribute {attr_name!r} (they offer "
                                 "render_mode, game, options and the GameOptions fields)")
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported: options are fixed when the workers start."""
        raise AttributeError(f"cannot set {attr_name!r}: shmenv envs run in worker processes "
                             "with options fixed at creation; make a new env instead")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Not supported: the games live in worker processes."""
        raise AttributeError(f"cannot call {method_name!r} on shmenv envs: the games live in "
                             "worker processes and expose no methods to SB3")

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """True for SB3's ``Monitor``: every env reports ``info["episode"]`` at the end of
        each episode exactly as a ``Monitor`` directly around the game would. False for
        anything else."""
        from stable_baselines3.common.monitor import Monitor

        wrapped = isinstance(wrapper_class, type) and issubclass(Monitor, wrapper_class)
        return [wrapped for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering (``render_mode`` is None): one None per env."""
        return [None for _ in range(self.num_envs)]

    def __repr__(self) -> str:
        return f"ShmSB3VecEnv({self.vector_env!r})"


def make_vec_env(game: str = "Breakout", num_envs: int = 8, *, seed: int | None = None,
                 num_workers: int | None = None, **game_options: Any) -> ShmSB3VecEnv:
    """Create a :class:`ShmVectorEnv` and wrap it for SB3 (``SAME_STEP`` autoreset).

    Arguments are those of :func:`shmenv.make`; ``seed`` seeds env i with ``seed + i``.
    """
    vector_env = ShmVectorEnv(game, num_envs, seed=seed, num_workers=num_workers,
                              autoreset_mode=AutoresetMode.SAME_STEP, **game_options)
    return ShmSB3VecEnv(vector_env)


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
