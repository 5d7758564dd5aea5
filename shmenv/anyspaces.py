"""Where a generic env's batches live in the shared block: regions, numpy views, writes.

The regions are laid out by gymnasium's own ``create_shared_memory``, called with a
stand-in for a multiprocessing context whose ``Array(typecode, size)`` hands out 64-byte
aligned byte ranges of shmenv's one block instead of separate shared arrays; gymnasium's
``read_from_shared_memory`` then turns them into numpy views. So every space gymnasium lays
out (Box, Discrete, MultiDiscrete, MultiBinary, nested in Dict and Tuple) gets gymnasium's
layout, and a space it cannot lay out raises gymnasium's own error (``CustomSpaceError``,
or ``TypeError`` for spaces with a dynamic shape).

Written here rather than taken from gymnasium, for the hot path: gymnasium's
``write_to_shared_memory`` re-wraps the buffer and flattens the value on every call (~3 µs
per env); :func:`obs_writer` binds each leaf's ``ndarray.__setitem__`` once, and
:func:`write_actions` checks and copies a whole batch of actions with one numpy copy per
leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory

from shmenv.anyinfos import INFO_SLOTS

_ALIGN = 64
BLOCK_LEAVES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def fits_block(space: spaces.Space) -> bool:
    """Whether a batch of ``space`` is plain numpy arrays that can be views of the block:
    the four base spaces, nested in any Dict or Tuple. Anything else (Text, OneOf, Graph,
    Sequence, custom spaces) travels pickled."""
    if isinstance(space, BLOCK_LEAVES):
        return True
    if isinstance(space, spaces.Dict):
        return all(fits_block(sub) for sub in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return all(fits_block(sub) for sub in space.spaces)
    return False


@dataclass(frozen=True)
class Region:
    """A byte range of the block's caller-owned part (picklable: offsets only)."""

    offset: int
    nbytes: int


class RegionContext:
    """Stands in for a multiprocessing context in ``create_shared_memory``: each
    ``Array(typecode, size)`` is the next aligned byte range of the block."""

    def __init__(self) -> None:
        self.offset = 0

    def Array(self, typecode: Any, size: int) -> Region:  # noqa: N802 - ctx.Array's name
        nbytes = int(size) * np.dtype(typecode).itemsize
        region = Region(self.offset, nbytes)
        self.offset = (self.offset + nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        return region


class _Bound:
    """A region bound to the mapped block, as ``read_from_shared_memory`` reads it."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def get_obj(self) -> np.ndarray:
        return self.data


def _bind(structure: Any, extra: np.ndarray) -> Any:
    if isinstance(structure, Region):
        return _Bound(extra[structure.offset:structure.offset + structure.nbytes])
    if isinstance(structure, dict):
        return {key: _bind(value, extra) for key, value in structure.items()}
    return tuple(_bind(value, extra) for value in structure)


@dataclass(frozen=True)
class BlockPlan:
    """The generic env's regions: every env's observation (if it fits the block), action
    (likewise), reward (float64), terminated and truncated (bool), and ``INFO_SLOTS``
    info columns of 8 bytes per env (:class:`shmenv.anyinfos.InfoColumns`). Built once in the main
    process and sent to the workers, which map the same block."""

    num_envs: int
    observation_space: spaces.Space
    action_space: spaces.Space
    obs: Any  # create_shared_memory's structure of Regions, or None (pickled)
    actions: Any
    rewards: Region
    terminated: Region
    truncated: Region
    infos: Region
    nbytes: int

    @classmethod
    def create(cls, observation_space: spaces.Space, action_space: spaces.Space,
               num_envs: int, obs_in_block: bool) -> BlockPlan:
        ctx = RegionContext()
        obs = (create_shared_memory(observation_space, num_envs, ctx=ctx)  # type: ignore[arg-type]
               if obs_in_block else None)
        actions = (create_shared_memory(action_space, num_envs, ctx=ctx)  # type: ignore[arg-type]
                   if fits_block(action_space) else None)
        rewards, terminated, truncated = (ctx.Array("d", num_envs), ctx.Array("?", num_envs),
                                          ctx.Array("?", num_envs))
        infos = ctx.Array("B", INFO_SLOTS * 8 * num_envs)
        return cls(num_envs, observation_space, action_space, obs, actions, rewards,
                   terminated, truncated, infos, max(ctx.offset, _ALIGN))

    def views(self, extra: np.ndarray) -> BlockViews:
        """Numpy views of every region of the mapped block (``SharedBlock.extra``)."""
        n = self.num_envs

        def read(space: spaces.Space, structure: Any) -> Any:
            if structure is None:
                return None
            return read_from_shared_memory(space, _bind(structure, extra), n)

        def flat(region: Region, dtype: Any) -> np.ndarray:
            return extra[region.offset:region.offset + region.nbytes].view(dtype)

        return BlockViews(read(self.observation_space, self.obs),
                          read(self.action_space, self.actions),
                          flat(self.rewards, np.float64), flat(self.terminated, np.bool_),
                          flat(self.truncated, np.bool_),
                          flat(self.infos, np.uint8).reshape(INFO_SLOTS, 8 * n))


@dataclass(frozen=True)
class BlockViews:
    """The views of a :class:`BlockPlan` in one process (None: that batch is pickled)."""

    obs: Any
    actions: Any
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: np.ndarray  # the info columns' bytes, (INFO_SLOTS, 8 * num_envs)


def select(views: Any, start: int, stop: int) -> Any:
    """The rows ``start:stop`` of a nested batch of views (a worker's envs)."""
    if isinstance(views, np.ndarray):
        return views[start:stop]
    if isinstance(views, dict):
        return {key: select(value, start, stop) for key, value in views.items()}
    return tuple(select(value, start, stop) for value in views)


def put_rows(views: Any, rows: np.ndarray, values: Any) -> None:
    """``views[rows] = values`` through a nested batch (async batches' actions)."""
    if isinstance(views, np.ndarray):
        views[rows] = values
    elif isinstance(views, dict):
        for key, value in views.items():
            put_rows(value, rows, values[key])
    else:
        for view, value in zip(views, values):
            put_rows(view, rows, value)


def snapshot(views: Any) -> Any:
    """A private copy of a nested batch (a worker's actions, so an env that keeps its
    action array never sees it change under it)."""
    if isinstance(views, np.ndarray):
        return views.copy()
    if isinstance(views, dict):
        return {key: snapshot(value) for key, value in views.items()}
    return tuple(snapshot(value) for value in views)


def obs_writer(space: spaces.Space, views: Any) -> Callable[[int, Any], None]:
    """``write(j, obs)``: env ``j``'s observation into its rows of ``views``. A base space's
    writer is the view's own ``__setitem__`` (no Python frame per call)."""
    if isinstance(views, np.ndarray):
        return views.__setitem__
    if isinstance(space, spaces.Dict):
        parts = [(key, obs_writer(space[key], views[key])) for key in space.spaces]

        def write_dict(j: int, value: Any) -> None:
            for key, write in parts:
                write(j, value[key])
        return write_dict
    assert isinstance(space, spaces.Tuple)
    items = [obs_writer(sub, view) for sub, view in zip(space.spaces, views)]

    def write_tuple(j: int, value: Any) -> None:
        for write, item in zip(items, value, strict=True):
            write(j, item)
    return write_tuple


class ActionWriter:
    """Checks and copies each step's batch of actions into the block (the main's side).

    Calling it returns True once the actions are in the block, or False when they must
    travel pickled instead: a flat Box batch that is not an ndarray of the space's own
    dtype and shape, because gymnasium hands each env exactly what the caller gave (a
    float64 scalar stays one, where a cast to the space's float32 would change it; a
    scalar for a ``(1,)`` space stays a scalar). Every other space is checked and copied by
    :func:`write_actions`.
    """

    def __init__(self, space: spaces.Space, views: Any) -> None:
        self.space = space
        self.views = views
        self.box = isinstance(space, spaces.Box)
        self.flat = isinstance(views, np.ndarray)

    def __call__(self, actions: Any) -> bool:
        views = self.views
        # A batch that is already an array of the block's dtype and shape passes every
        # check of write_actions: one copy (~1.1 µs for 64 Discrete actions, ~2.3 checked).
        if (self.flat and type(actions) is np.ndarray and actions.dtype == views.dtype
                and actions.shape == views.shape):
            np.copyto(views, actions)
            return True
        if self.box:
            # Anything else goes to the envs as gymnasium's iterate gives it, unchecked
            # but for the count (gymnasium's own tests step Box envs with scalars).
            try:
                count = len(actions)
            except TypeError:
                raise TypeError(f"actions must be a batch of {len(views)} actions of "
                                f"{self.space} (one per env), got {actions!r}") from None
            if count != len(views):
                raise ValueError(f"actions must hold {len(views)} actions of {self.space} "
                                 f"(one per env), got {count}")
            return False
        write_actions(self.space, self.views, actions)
        return True


def write_actions(space: spaces.Space, views: Any, actions: Any, path: str = "actions") -> None:
    """Check a batch of actions against the single-env ``space`` and copy it into ``views``.

    Raises TypeError or ValueError naming what is wrong: a scalar or a wrong shape (the
    batch has one action per env), a non-integer for a discrete space (naming the first
    one). Values are not checked against the space's range or bounds: as under gymnasium,
    the env decides (an env that refuses one raises, and its error names the env).
    """
    if isinstance(space, spaces.Dict):
        if not isinstance(actions, dict):
            raise TypeError(f"{path} must be a dict with keys {list(space.spaces)} for the "
                            f"action space {space}, got {type(actions).__name__}")
        for key, sub in space.spaces.items():
            if key not in actions:
                raise ValueError(f"{path} has no key {key!r} (action space {space})")
            write_actions(sub, views[key], actions[key], f"{path}[{key!r}]")
        return
    if isinstance(space, spaces.Tuple):
        if not isinstance(actions, (tuple, list)) or len(actions) != len(space.spaces):
            raise TypeError(f"{path} must be a tuple of {len(space.spaces)} batches for the "
                            f"action space {space}, got {type(actions).__name__}")
        for k, (sub, view, part) in enumerate(zip(space.spaces, views, actions)):
            write_actions(sub, view, part, f"{path}[{k}]")
        return
    shape = views.shape
    try:
        array = np.asarray(actions)
    except ValueError as exc:  # a ragged list
        raise ValueError(f"{path} must be a batch of shape {shape}: {exc}") from None
    if array.ndim == 0:
        raise TypeError(f"{path} must be a batch of shape {shape} (one action of {space} "
                        f"per env), got the scalar {actions!r}")
    if array.shape != shape:
        raise ValueError(f"{path} must have shape {shape} (one action of {space} per env), "
                         f"got shape {array.shape}")
    if not isinstance(space, spaces.Box):
        allowed = "iub" if isinstance(space, spaces.MultiBinary) else "iu"
        if array.dtype.kind not in allowed:
            flat = array.reshape(-1).tolist()
            index = next((i for i, v in enumerate(flat) if isinstance(v, bool)
                          or not isinstance(v, (int, np.integer))), None)
            if index is not None:
                position = np.unravel_index(index, shape)
                raise TypeError(
                    f"{path} must be integers for the action space {space}: "
                    f"{path}[{', '.join(map(str, position))}] = {flat[index]!r} "
                    f"(env {position[0]}, array dtype {array.dtype})")
    np.copyto(views, array, casting="unsafe" if array.dtype.kind == "O" else "same_kind")
