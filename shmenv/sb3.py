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

The observations are already stacked and channel-first, ``(stack, height, width)``: SB3
sees an image space in PyTorch's order, needs no ``VecTransposeImage`` and must not stack
again with ``VecFrameStack`` (the adapter warns, :class:`FrameStackWarning`). See
docs/from-envpool.md for SB3's wrappers next to shmenv's options.

Requires the ``sb3`` extra (``pip install "shmenv[sb3]"`` after ``torch``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from functools import cache
from types import FrameType
from typing import Any

import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvWrapper
from stable_baselines3.common.vec_env.vec_frame_stack import VecFrameStack

from shmenv.games import GameOptions
from shmenv.sb3_subproc import SubprocVecEnv
from shmenv.vector import ShmVectorEnv

__all__ = ["FrameStackWarning", "ShmSB3VecEnv", "SubprocVecEnv", "make_vec_env"]

# How far up the call stack reset() looks for a VecFrameStack whose reset() called it: each
# wrapper between them adds a frame or two (SB3's own wrappers: one).
_WRAPPER_FRAMES = 24


class FrameStackWarning(UserWarning):
    """SB3's ``VecFrameStack`` stacks observations that shmenv has already stacked.

    A warning, not an error: the result is valid data and trains, only wastefully (the
    default ``VecFrameStack(env, 4)`` gives 16 channels holding 7 distinct frames: 4× the
    rollout memory and a wider first convolution for no new information), and the check
    reads the call stack of ``reset()``, a heuristic that should not stop a run. Make it
    an error with ``warnings.simplefilter("error", FrameStackWarning)``.
    """


class ShmSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a :class:`~shmenv.ShmVectorEnv` (which must use ``SAME_STEP``
    autoreset, shmenv's default: SB3 expects the reset observation in the same step).

    Seeding follows SB3: ``env.seed(s)`` gives env i the seed ``s + i`` at the next
    ``reset()`` (this reloads every ROM, ~0.2 s per env).

    Attributes for ``get_attr`` (every env runs one game with one option set, so each has
    one value, but ``lives``): ``render_mode`` (None), ``game``, ``options``, every
    :class:`~shmenv.GameOptions` field, ``spec`` (a gymnasium ``EnvSpec`` that
    ``gymnasium.make_vec`` turns back into a ``ShmVectorEnv`` of the same game and
    options), ``observation_space``, ``action_space`` and ``lives`` (each env's lives now,
    i.e. after the autoreset of a finished game). ``env_method`` offers
    ``get_action_meanings`` (ALE's names of the game's actions) and
    ``get_wrapper_attr(name)``.
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
        # Lives now, and at the start of a game (what an env has again after a game ends).
        self._lives = np.zeros(vector_env.num_envs, dtype=np.int64)
        self._start_lives = self._lives
        self._warned_stacking = False
        super().__init__(vector_env.num_envs, vector_env.single_observation_space,
                         vector_env.single_action_space)

    # ---------------------------------------------------------------- core API
    def reset(self) -> np.ndarray:
        """Reset every env (reseeding first if :meth:`seed` was called); returns a copy of
        the ``(num_envs, stack, height, width)`` uint8 stacks."""
        if not self._warned_stacking:
            self._warn_if_stacked_again()
        seeds = self._seeds
        if all(s is None for s in seeds):
            obs, info = self.vector_env.reset()
        elif any(s is None for s in seeds):
            raise ValueError(f"either every env gets a seed or none does, got {seeds}")
        else:
            obs, info = self.vector_env.reset(seed=[int(s) for s in seeds if s is not None])
        if any(self._options):
            raise ValueError(f"shmenv envs take no reset options, got {self._options}")
        self._reset_seeds()
        self._reset_options()
        self._lives = info["lives"].astype(np.int64)
        self._start_lives = self._lives.copy()
        self.reset_infos = [{"lives": int(n)} for n in self._lives]
        return np.array(obs, copy=True)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions; the step itself runs in :meth:`step_wait`."""
        actions = np.asarray(actions)
        if actions.size == self.num_envs and actions.ndim > 1:
            actions = actions.reshape(self.num_envs)  # e.g. (n, 1) from a custom policy
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env; returns ``(obs, rewards, dones, infos)`` as SB3 expects (see the
        module docstring). ``obs`` is a copy; rewards are float32. ``infos[i]["lives"]``
        is the lives of the step that ended (0 at a game over), not of the next game."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions) first")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.vector_env.step(actions)
        dones = terminated | truncated
        lives = info["lives"]
        infos: list[dict[str, Any]] = [{"lives": int(lives[i])} for i in range(self.num_envs)]
        self._lives = lives
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
            if ended is not None:  # a new game began where a game ended
                self._lives = np.where(ended, self._start_lives, lives)
        return (np.array(obs, copy=True), rewards.astype(np.float32), dones, infos)

    def close(self) -> None:
        """Stop the workers and release the shared block."""
        self.vector_env.close()

    # ---------------------------------------------------------------- wrappers
    def _warn_if_stacked_again(self) -> None:
        """Warn when the ``reset()`` running now was called by an SB3 ``VecFrameStack``
        that (through any wrappers) wraps this env and stacks what is stacked already, or
        stacks channel-first frames along their width."""
        frame: FrameType | None = sys._getframe(2)  # the caller of reset()
        for _ in range(_WRAPPER_FRAMES):
            if frame is None:
                return
            wrapper = frame.f_locals.get("self")
            if isinstance(wrapper, VecFrameStack) and _unwraps_to(wrapper, self):
                message = _stacking_problem(wrapper, self.vector_env.options)
                if message:
                    self._warned_stacking = True
                    warnings.warn(message, FrameStackWarning, stacklevel=3)
                    return
            frame = frame.f_back

    # ---------------------------------------------------------------- attributes
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """One value per env in ``indices`` (see the class docstring for the names)."""
        chosen = self._indices(indices)
        if attr_name == "lives":
            return [int(self._lives[i]) for i in chosen]
        vector_env = self.vector_env
        if attr_name == "render_mode":
            value: Any = None
        elif attr_name in ("game", "options"):
            value = getattr(vector_env, attr_name)
        elif attr_name == "spec":
            value = env_spec(vector_env.game, vector_env.options)
        elif attr_name in ("observation_space", "action_space"):
            value = getattr(vector_env, f"single_{attr_name}")
        elif hasattr(vector_env.options, attr_name):
            value = getattr(vector_env.options, attr_name)
        else:
            raise AttributeError(f"shmenv envs have no attribute {attr_name!r} (they offer "
                                 "render_mode, game, options, spec, lives, observation_space, "
                                 "action_space and the GameOptions fields)")
        return [value for _ in chosen]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported: options are fixed when the workers start."""
        raise AttributeError(f"cannot set {attr_name!r}: shmenv envs run in worker processes "
                             "with options fixed at creation; make a new env instead "
                             "(shmenv.sb3.make_vec_env(game, num_envs, **options))")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """``get_action_meanings()`` or ``get_wrapper_attr(name)``, one result per env; the
        games themselves live in worker processes and expose no other method."""
        chosen = self._indices(indices)
        if method_name == "get_action_meanings" and not (method_args or method_kwargs):
            options = self.vector_env.options
            meanings = action_meanings(self.vector_env.game, options.full_action_space)
            return [list(meanings) for _ in chosen]
        if method_name == "get_wrapper_attr" and len(method_args) == 1 and not method_kwargs:
            return self.get_attr(method_args[0], indices=chosen)
        raise AttributeError(f"cannot call {method_name!r} on shmenv envs: the games live in "
                             "worker processes; env_method offers get_action_meanings() and "
                             "get_wrapper_attr(name)")

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


def _unwraps_to(wrapper: VecEnvWrapper, env: VecEnv) -> bool:
    """Whether ``env`` is at the bottom of ``wrapper``'s chain of ``.venv``."""
    inner: VecEnv = wrapper
    while isinstance(inner, VecEnvWrapper):
        inner = inner.venv
    return inner is env


def _stacking_problem(wrapper: VecFrameStack, options: GameOptions) -> str | None:
    """What is wrong with ``wrapper`` stacking shmenv's frames, or None."""
    stacked = wrapper.stacked_obs
    shape = tuple(wrapper.observation_space.shape or ())
    if not stacked.channels_first:
        return (f"VecFrameStack stacks along the last axis, giving {shape} observations, but "
                "shmenv's frames are channel-first (stack, height, width): make the env "
                f"with stack=1 and wrap it in VecFrameStack(env, {stacked.n_stack}, "
                "channels_order='first'), or drop VecFrameStack")
    if options.stack == 1:
        return None
    distinct = options.stack + stacked.n_stack - 1
    return (f"VecFrameStack(n_stack={stacked.n_stack}) stacks shmenv observations that are "
            f"already stacks of {options.stack} frames: the model gets {shape} observations "
            f"holding {distinct} distinct frames, each up to "
            f"{min(options.stack, stacked.n_stack)} times. Drop VecFrameStack (shmenv's "
            f"stack={options.stack} is what VecFrameStack(env, {options.stack}) would give), "
            "or make the env with stack=1 to let VecFrameStack stack")


def env_spec(game: str, options: GameOptions) -> EnvSpec:
    """A gymnasium ``EnvSpec`` for one env of ``game`` with ``options``. It has no single-env
    entry point (each env lives in a worker process): ``gymnasium.make_vec(spec, n)``
    builds a ``ShmVectorEnv`` with ``shmenv.make``."""
    return EnvSpec(id=f"shmenv/{game}", entry_point=None, vector_entry_point="shmenv:make",
                   nondeterministic=options.repeat_action_probability > 0,
                   max_episode_steps=options.max_episode_steps,
                   kwargs={"game": game, **options.as_dict()})


@cache
def action_meanings(game: str, full_action_space: bool = False) -> tuple[str, ...]:
    """ALE's names of ``game``'s actions in action order (``("NOOP", "FIRE", "RIGHT",
    "LEFT")`` for Breakout), as gymnasium's ``AtariEnv.get_action_meanings``. Loads the
    ROM once in this process (~0.1 s)."""
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    path = roms.get_rom_path(game)
    if path is None:
        raise ValueError(f"ale-py ships no ROM file for {game!r}")
    ale = ALEInterface()
    ale.loadROM(path)
    action_set = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
    return tuple(action.name for action in action_set)


def make_vec_env(game: str = "Breakout", num_envs: int = 8, *, seed: int | None = None,
                 num_workers: int | None = None, **game_options: Any) -> ShmSB3VecEnv:
    """Create a :class:`ShmVectorEnv` and wrap it for SB3 (``SAME_STEP`` autoreset).

    Arguments are those of :func:`shmenv.make`; ``seed`` seeds env i with ``seed + i``.
    For episode statistics comparable with SB3's ``AtariWrapper`` + ``Monitor`` (whole
    games, while a lost life still ends the episode the agent learns from), pass
    ``on_life_loss="end_episode"``.
    """
    vector_env = ShmVectorEnv(game, num_envs, seed=seed, num_workers=num_workers,
                              autoreset_mode=AutoresetMode.SAME_STEP, **game_options)
    return ShmSB3VecEnv(vector_env)
