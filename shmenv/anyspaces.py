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

from shmenv.actions import check_actions

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
    (likewise), reward (float64), terminated and truncated (bool). Built once in the main
    process and sent to the workers, which map the same block."""

    num_envs: int
    observation_space: spaces.Space
    action_space: spaces.Space
    obs: Any  # create_shared_memory's structure of Regions, or None (pickled)
    actions: Any
    rewards: Region
    terminated: Region
    truncated: Region
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
        return cls(num_envs, observation_space, action_space, obs, actions, rewards,
                   terminated, truncated, max(ctx.offset, _ALIGN))

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
                          flat(self.truncated, np.bool_))


@dataclass(frozen=True)
class BlockViews:
    """The views of a :class:`BlockPlan` in one process (None: that batch is pickled)."""

    obs: Any
    actions: Any
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


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

    A flat ``Discrete`` space starting at 0 (CartPole's and most others') goes through
    :func:`shmenv.actions.check_actions`, the validator the Atari envs use: a few µs
    without a ufunc; every other space through :func:`write_actions`."""

    def __init__(self, space: spaces.Space, views: Any) -> None:
        self.space = space
        self.views = views
        self.num_actions = (int(space.n) if isinstance(space, spaces.Discrete)
                            and int(space.start) == 0 else 0)
        self.name = f"the action space {space}"

    def __call__(self, actions: Any) -> None:
        if self.num_actions:
            self.views[:] = check_actions(actions, len(self.views), self.num_actions,
                                          self.name)
        else:
            write_actions(self.space, self.views, actions)


def write_actions(space: spaces.Space, views: Any, actions: Any, path: str = "actions") -> None:
    """Check a batch of actions against the single-env ``space`` and copy it into ``views``.

    Raises ValueError or TypeError naming the first bad entry (env index and value): a
    wrong shape, a non-integer for a discrete space, a value outside a discrete space's
    range. Box values are cast to the space's dtype (as gymnasium's vector envs pass them
    on) but not clipped or checked against the bounds.
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
    count = len(views)
    array = np.asarray(actions)
    shape = (count, *(space.shape or ()))
    if array.shape != shape:
        raise ValueError(f"{path} must have shape {shape} (one action of {space} per env), "
                         f"got shape {array.shape}")
    if isinstance(space, spaces.Box):
        np.copyto(views, array, casting="same_kind")
        return
    binary = isinstance(space, spaces.MultiBinary)
    if array.dtype.kind not in ("iub" if binary else "iu"):
        raise TypeError(f"{path} must be integers for the action space {space}, got dtype "
                        f"{array.dtype}")
    if binary:
        low, high = np.asarray(0), np.asarray(2)
    elif isinstance(space, spaces.MultiDiscrete):
        low = np.asarray(space.start)
        high = low + space.nvec
    else:  # Discrete
        low = np.asarray(int(space.start))  # type: ignore[attr-defined]
        high = low + int(space.n)  # type: ignore[attr-defined]
    bad = (array < low) | (array >= high)
    if bad.any():
        where = np.argwhere(bad)[0]
        value = array[tuple(where)].item()
        raise ValueError(f"{path}[{', '.join(map(str, where))}] = {value!r} is outside the "
                         f"action space {space} (env {where[0]})")
    np.copyto(views, array, casting="unsafe")
