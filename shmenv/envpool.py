"""envpool's Atari API on shmenv: ``from shmenv import envpool`` instead of ``import envpool``.

``envpool.make("Breakout-v5", env_type="gymnasium" | "gym", **kwargs)``,
``make_gymnasium`` and ``make_gym`` take envpool's task ids, option names and defaults and
return an object with envpool's methods (``reset``, ``step``, ``send``, ``recv``,
``async_reset``), per-env spaces and info keys (``env_id``, ``players``, ``lives``,
``reward``, ``terminated``, ``elapsed_step``). The games follow envpool's rules
(:class:`shmenv.envpool_game.EnvpoolAtariGame`) with envpool's seeding, so the same seeds and
actions give the same observations, rewards and flags (tests/test_envpool_parity.py checks
that against envpool). ``env_type="gym"`` follows envpool 0.8's gym API, the one CleanRL's
``ppo_atari_envpool.py`` uses: with gym < 0.26 (or no gym) ``reset()`` returns obs and
``step()`` a 4-tuple; its attributes may be set. What differs from envpool, and why:
docs/from-envpool.md.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import namedtuple
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from gymnasium import spaces as gymnasium_spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from shmenv.envpool_game import EnvpoolAtariGame
from shmenv.games import UnknownGameError, resolve_game
from shmenv.vector import ShmVectorEnv

ENV_TYPES = ("gymnasium", "gym")

# envpool's Atari options and their defaults (envpool 1.2.5, ``make_spec(...).config``).
DEFAULTS: dict[str, Any] = {
    "num_envs": 1, "batch_size": 0, "num_threads": 0, "seed": 42,
    "max_episode_steps": 27000, "img_height": 84, "img_width": 84, "stack_num": 4,
    "gray_scale": True, "frame_skip": 4, "noop_max": 30, "episodic_life": False,
    "zero_discount_on_life_loss": False, "reward_clip": False,
    "repeat_action_probability": 0.0, "use_inter_area_resize": True, "use_fire_reset": True,
    "full_action_space": False, "thread_affinity_offset": -1,
}
# envpool options shmenv accepts only at these values.
FIXED: dict[str, Any] = {"max_num_players": 1, "mode": -1, "difficulty": -1,
                         "use_inter_area_resize": True, "gym_reset_return_info": True}

_TASK = re.compile(r"^([A-Za-z0-9]+)-v5$")


def make(task_id: str, env_type: str = "gymnasium", *, copy: bool = True,
         **kwargs: Any) -> EnvPool:
    """An envpool-style pool of ``task_id`` games (``"Breakout-v5"``).

    ``env_type``: ``"gymnasium"`` (envpool 1.2's API) or ``"gym"`` (envpool 0.8's gym API,
    as CleanRL uses it). ``kwargs``: envpool's Atari options (see :data:`DEFAULTS`).
    ``copy`` (shmenv's own): True (default) returns fresh observation arrays as envpool
    does; False returns read-only views of the shared block, valid until the next call
    (no copy, for loops that copy them anyway, e.g. into a torch tensor).
    Raises TypeError for an unknown option, ValueError for a value shmenv cannot honour.
    """
    if env_type not in ENV_TYPES:
        raise ValueError(f"env_type must be one of {', '.join(map(repr, ENV_TYPES))} "
                         f"(shmenv.envpool has no {env_type!r} API), got {env_type!r}")
    return EnvPool(task_id, env_type, kwargs, copy=copy)


def make_gymnasium(task_id: str, *, copy: bool = True, **kwargs: Any) -> EnvPool:
    """``make(task_id, env_type="gymnasium", **kwargs)``."""
    return make(task_id, "gymnasium", copy=copy, **kwargs)


def make_gym(task_id: str, *, copy: bool = True, **kwargs: Any) -> EnvPool:
    """``make(task_id, env_type="gym", **kwargs)``: envpool 0.8's gym API."""
    return make(task_id, "gym", copy=copy, **kwargs)


def _game_of(task_id: str) -> str:
    match = _TASK.match(task_id) if isinstance(task_id, str) else None
    if match is None:
        raise ValueError(f"task_id must be an envpool Atari task id such as 'Breakout-v5' "
                         f"('<Game>-v5'), got {task_id!r}")
    try:
        return resolve_game(match.group(1))
    except UnknownGameError as exc:
        raise ValueError(f"unknown Atari task {task_id!r}: {exc}") from None


def _config(task_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """envpool's config for ``kwargs``, or the error naming the first option that is not
    one of envpool's or has a value shmenv cannot honour."""
    unknown = sorted(set(kwargs) - set(DEFAULTS) - set(FIXED))
    if unknown:
        raise TypeError(f"unknown envpool option(s) {unknown}; shmenv.envpool takes "
                        f"{sorted(set(DEFAULTS) | set(FIXED))}")
    for name, value in kwargs.items():
        if name in FIXED and value != FIXED[name]:
            raise ValueError(f"shmenv.envpool does not support {name}={value!r} (only "
                             f"{FIXED[name]!r})")
    config = {**DEFAULTS, **{k: v for k, v in kwargs.items() if k in DEFAULTS}}
    if not isinstance(config["noop_max"], int) or config["noop_max"] < 1:
        raise ValueError(f"noop_max must be an int >= 1 (envpool plays 1..noop_max NOOP "
                         f"frames; noop_max=1 is one frame), got {config['noop_max']!r}; "
                         "shmenv.make(noop_max=0) has none")
    num_envs = config["num_envs"]
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    batch_size = config["batch_size"]
    if not isinstance(batch_size, int) or batch_size > num_envs:
        raise ValueError(f"batch_size must be an int <= num_envs ({num_envs}), "
                         f"got {batch_size!r}")
    config["batch_size"] = num_envs if batch_size <= 0 else batch_size
    config["task"] = _game_of(task_id)
    return config


def _cpus(offset: int) -> list[int] | bool:
    """envpool's ``thread_affinity_offset``: worker t on core ``(offset + t) % cores``."""
    if offset < 0:
        return False
    cores = os.cpu_count() or 1
    return [(offset + t) % cores for t in range(cores)]


def _space_module(env_type: str) -> Any:
    """gym's spaces for the gym API when gym is installed (CleanRL asserts them), else
    gymnasium's."""
    if env_type == "gym":
        try:
            import gym  # noqa: PLC0415 - optional, never a dependency of shmenv
        except ImportError:
            return gymnasium_spaces
        return gym.spaces
    return gymnasium_spaces


def _old_gym_api(env_type: str) -> bool:
    """Whether the gym API is the pre-0.26 one: reset -> obs, step -> 4-tuple."""
    if env_type != "gym":
        return False
    try:
        import gym  # noqa: PLC0415
    except ImportError:
        return True
    major, minor = (int(part) for part in gym.__version__.split(".")[:2])
    return (major, minor) < (0, 26)


class EnvPool(VectorEnv):
    """A pool of Atari games with envpool's API (see the module docstring).

    Observations are fresh arrays, as envpool's (``copy=False`` at make: read-only views of
    shmenv's shared block, valid until the next ``step``/``recv``/``reset``).
    Differences from envpool: a partial ``reset(env_id)`` or a synchronous step of some of
    the envs raises (shmenv steps all envs at once; use ``batch_size`` for async batches);
    out-of-range or float actions raise instead of being read as something else; no
    ``info["ram"]``; ``reset(seed=...)`` warns and is ignored, as in envpool 1.2.
    """

    def __init__(self, task_id: str, env_type: str, kwargs: dict[str, Any],
                 copy: bool = True) -> None:
        config = _config(task_id, kwargs)
        self.config = config
        self.spec = _Spec(namedtuple("Config", sorted(config))(**config))  # type: ignore[assignment,misc]
        num_envs, batch_size = config["num_envs"], config["batch_size"]
        threads = config["num_threads"]
        num_workers = (min(threads, num_envs) if threads > 0 and batch_size == num_envs
                       else None)
        self._env = ShmVectorEnv(
            config["task"], num_envs, seed=config["seed"], num_workers=num_workers,
            batch_size=batch_size, cpu_affinity=_cpus(config["thread_affinity_offset"]),
            autoreset_mode=AutoresetMode.NEXT_STEP, game_factory=EnvpoolAtariGame, copy=copy,
            frame_skip=config["frame_skip"], stack=config["stack_num"],
            size=(config["img_height"], config["img_width"]),
            gray_scale=config["gray_scale"], noop_max=config["noop_max"],
            fire_reset=config["use_fire_reset"], reward_clip=config["reward_clip"],
            on_life_loss="end_episode" if config["episodic_life"] else "continue",
            max_episode_steps=config["max_episode_steps"], max_episode_frames=None,
            repeat_action_probability=config["repeat_action_probability"],
            full_action_space=config["full_action_space"], maxpool="standard",
            seeding="envpool")
        self.env_type = env_type
        self._old_api = _old_gym_api(env_type)
        space_module = _space_module(env_type)
        single = self._env.single_observation_space
        self.observation_space = space_module.Box(0, 255, single.shape, np.uint8)
        actions = cast(gymnasium_spaces.Discrete, self._env.single_action_space)
        self.action_space = space_module.Discrete(int(actions.n))
        self.single_observation_space = self.observation_space
        self.single_action_space = self.action_space
        self.num_envs = num_envs
        self.batch_size = batch_size
        self.is_vector_env = True
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self.reward_range = (-float("inf"), float("inf"))
        self.all_env_ids = np.arange(num_envs, dtype=np.int32)
        self._started = False

    # ----------------------------------------------------------------- facts
    @property
    def is_async(self) -> bool:
        return self.batch_size < self.num_envs

    def __len__(self) -> int:
        return self.num_envs

    @property
    def env(self) -> ShmVectorEnv:
        """The shmenv vector env underneath."""
        return self._env

    # ----------------------------------------------------------------- the API
    def reset(self, env_id: Any = None, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | None = None) -> Any:
        """Reset every env (a new game each). ``env_id`` must be None or every env."""
        if seed is not None:
            warnings.warn("seed is fixed at make() (as in envpool); reset(seed=...) is "
                          "ignored", UserWarning, stacklevel=2)
        if options:
            raise ValueError(f"shmenv.envpool's reset takes no options, got {sorted(options)}")
        self._check_all(env_id, "reset")
        self._started = True
        obs, infos = self._env.reset()
        ids = infos.get("env_id", self.all_env_ids)
        info = self._info(infos, ids, np.zeros(len(ids), dtype=bool))
        return obs if self._old_api else (obs, info)

    def step(self, action: Any, env_id: Any = None) -> Any:
        """Step the envs: all of them (sync), or send to ``env_id`` and receive the next
        ready batch (async)."""
        if self.is_async:
            self.send(action, env_id)
            return self.recv()
        self._check_all(env_id, "step")
        if not self._started:  # envpool: every env starts done, so this step resets
            obs, infos = self._env.reset()
            self._started = True
            return self._outputs(obs, np.zeros(self.num_envs), np.zeros(self.num_envs, bool),
                                 np.zeros(self.num_envs, bool), infos)
        return self._outputs(*self._env.step(action))

    def send(self, action: Any, env_id: Any = None) -> None:
        """Start a step of ``env_id`` (all envs if None); collect it with :meth:`recv`."""
        if not self._started:  # envpool: the first send resets and ignores the action
            self.async_reset()
            return
        if env_id is not None:
            env_id = np.asarray(env_id)
        self._env.send(action, env_id)

    def recv(self) -> Any:
        """The next ``batch_size`` envs whose step (or reset) is done."""
        return self._outputs(*self._env.recv())

    def async_reset(self) -> None:
        """Reset every env without waiting; the results come out of :meth:`recv`."""
        self._started = True
        self._env.async_reset()

    def close(self, **kwargs: Any) -> None:
        self._env.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- helpers
    def _check_all(self, env_id: Any, what: str) -> None:
        if env_id is None:
            return
        ids = np.asarray(env_id).ravel()
        if ids.size != self.num_envs or not np.array_equal(np.sort(ids), self.all_env_ids):
            raise ValueError(f"shmenv.envpool cannot {what} a subset of the envs "
                             f"(env_id={ids.tolist()}) in sync mode: it {what}s all "
                             "envs at once; use batch_size < num_envs for async batches")

    def _info(self, infos: dict[str, Any], ids: np.ndarray,
              truncations: np.ndarray) -> dict[str, Any]:
        ids = np.asarray(ids, dtype=np.int32)
        info = {"env_id": ids, "players": {"env_id": ids},
                "lives": infos["lives"], "reward": infos["reward"],
                "terminated": infos["terminated"].astype(np.int32),
                "elapsed_step": infos["elapsed_step"]}
        if self._old_api:
            info["TimeLimit.truncated"] = truncations
        return info

    def _outputs(self, obs: np.ndarray, rewards: np.ndarray, terminations: np.ndarray,
                 truncations: np.ndarray, infos: dict[str, Any]) -> tuple:
        ids = infos.get("env_id", self.all_env_ids)
        info = self._info(infos, ids, truncations)
        rewards = rewards.astype(np.float32)
        if self._old_api:
            return obs, rewards, terminations | truncations, info
        return obs, rewards, terminations, truncations, info

    def __repr__(self) -> str:
        return (f"shmenv.envpool.EnvPool({self.config['task']!r}, num_envs={self.num_envs}, "
                f"env_type={self.env_type!r})")


class _Spec:
    """``env.spec.config``, as envpool's spec carries it."""

    def __init__(self, config: Any) -> None:
        self.config = config
