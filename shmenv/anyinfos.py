"""Infos on the wire: packed by a generic worker, merged by the main exactly as gymnasium does.

gymnasium merges infos env by env with ``VectorEnv._add_info``: every key becomes a batch
array (``np.zeros(num_envs, dtype=type(first value))`` for an ``int``/``float``/``bool``
or numpy number, an object array otherwise, a nested dict for a dict) and a ``_key`` mask.
Calling it for every env that has an info costs the main process ~1 µs per key per env,
every step, for envs whose infos are a few numbers (MuJoCo's, ALE's ``lives``): hundreds
of µs per step at 64 envs, while the workers wait.

So a worker packs its infos of one step as ``(finals, columns, rest)``:

* ``finals``: ``[(env, final_obs, final_info)]``, SAME_STEP's ended episodes;
* ``columns``: ``{key: (envs, dtype, values)}`` for the keys whose every value in this
  worker is a plain number (gymnasium's test: ``type(v) in (int, float, bool)`` or a numpy
  number), cast to the first value's type;
* ``rest``: ``[(env, {key: value})]``, every other key, in env order.

and the main merges them with one numpy assignment per column and ``_add_info`` for the
rest. The result equals gymnasium's: workers hold consecutive envs and are merged in order,
a key is either a column or in ``rest`` within one worker, so the first env that has a key
still decides its dtype, and ``final_obs``/``final_info`` keys never meet the others.

Most envs that have infos return the same few numbers every step (MuJoCo's positions and
reward terms, Humanoid's two-element tendon arrays): those skip the pickle both ways. A
worker whose envs returned infos with the same keys, each value of one plain-number type
(or a numeric array of one shape and dtype) per key, writes them into its rows of the
block's info columns (:class:`InfoColumns`, a column per key, an array taking one slot per
element; learned from the first such step and told to the main once, as ``block_keys``).
When every env's info fits, its reply is the one byte :data:`IN_BLOCK` and the main copies
each column's rows with one numpy assignment (:meth:`InfoMerger.merge_block`). When only
some do (the envs that just reset return a reset's info), the others are listed and
pickled, and the reply names them (``skipped``), so that a Humanoid worker whose 32 envs
see a reset nearly every step still sends most of its infos through the block. A listed
env whose value for a column's key has another type makes the whole step pickled: the
first env's type decides a key's dtype, and merging columns before the rest must not
change which one that is.
"""

from __future__ import annotations

from math import prod
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv

PLAIN_TYPES = (int, float, bool)
INFO_SLOTS = 16  # the block's info columns: at most this many keys skip the pickle
IN_BLOCK = b"\x01"  # a worker's whole reply when its infos are all in the block's columns
# (key, dtype, shape) of each info column, in slot order; shape () for a number
BlockKeys = tuple[tuple[str, str, tuple[int, ...]], ...]
Packed = tuple[list[tuple[int, Any, Any]], dict[str, tuple[list[int], str, list[Any]]],
               list[tuple[int, dict[str, Any]]], BlockKeys | None, list[int]]
_SHAPE_DTYPE = attrgetter("shape", "dtype")


def pack_infos(finals: list[tuple[int, Any, Any]], infos: list[tuple[int, dict[str, Any]]],
               block_keys: BlockKeys | None = None, skipped: list[int] | None = None
               ) -> Packed:
    """A worker's infos of one step (``infos``: ``(env, info)`` in env order, the listed
    ones). With ``block_keys``, the infos of the worker's other envs are in the block's
    info columns: all but the envs ``skipped``."""
    columns: dict[str, tuple[list[int], list[Any]]] = {}
    mixed: set[str] = set()
    for env, info in infos:
        for key, value in info.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = ([], [])
            column[0].append(env)
            column[1].append(value)
            if type(value) not in PLAIN_TYPES and not isinstance(value, np.number):
                mixed.add(key)
    rest: list[tuple[int, dict[str, Any]]] = []
    if mixed:
        by_env: dict[int, dict[str, Any]] = {}
        for key in mixed:
            envs, values = columns.pop(key)
            for env, value in zip(envs, values):
                by_env.setdefault(env, {})[key] = value
        rest = sorted(by_env.items())
    # Each column is cast to the first env's type, as _add_info's assignments into its
    # batch array would cast it, and sent as its dtype and a list of Python numbers: those
    # unpickle ~10x faster than numpy scalars (~1 µs each) or small arrays (~5 µs).
    packed = {}
    for key, (envs, values) in columns.items():
        array = np.array(values, dtype=type(values[0]))
        packed[key] = (envs, array.dtype.str, array.tolist())
    return finals, packed, rest, block_keys, skipped or []


def _column_spec(value: Any) -> tuple[type, np.dtype, tuple[int, ...]] | None:
    """The type, dtype and shape a block column may hold ``value`` as (gymnasium batches
    a number as an array of its type, an array as one of its shape and dtype), or None:
    not a number or a numeric array, or an element wider than a column's 8 bytes."""
    kind = type(value)
    if kind in PLAIN_TYPES:
        return kind, np.dtype(kind), ()
    if kind is np.ndarray and value.size:
        dtype, shape = value.dtype, value.shape
    elif issubclass(kind, np.number):  # not timedelta64 (a number whose unit is its dtype's)
        dtype, shape = np.dtype(kind), ()
    else:
        return None
    return (kind, dtype, shape) if dtype.kind in "biufc" and dtype.itemsize <= 8 else None


class InfoColumns:
    """A worker's side of the block's info columns: its rows of each column (the block's
    ``(INFO_SLOTS, 8 * num_envs)`` bytes ``raw``) and the keys they hold."""

    def __init__(self, raw: np.ndarray, start: int, stop: int) -> None:
        self.raw, self.start, self.stop = raw, start, stop
        self.keys: tuple[str, ...] = ()
        self.types: tuple[type, ...] = ()
        self.arrays: tuple[tuple[tuple[int, ...], np.dtype] | None, ...] = ()  # per column
        self._get: Any = None  # itemgetter of the keys
        self._specs: dict[str, tuple[type, Any]] = {}  # key -> (type, array spec or None)
        self.columns: list[np.ndarray] = []
        self.block_keys: BlockKeys = ()
        self.told = False  # whether the main has these block_keys (else they go with them)

    def write(self, infos: list[dict[str, Any]]) -> list[int] | None:
        """Write one step's infos (one per env, in env order) into the columns, learning
        them from the first info if none of them fits the columns known. Returns the
        positions of the envs whose info is not in the columns (to be listed), or None
        if this step's infos cannot use the columns at all."""
        for learned in (False, True):
            values = self._gather(infos)
            if values is not None:
                for column, column_values in zip(self.columns, values):
                    column[:] = column_values
                return []
            fits, rows = self._split(infos) or ([], [])
            if fits:
                values = list(zip(*rows)) if len(self.keys) > 1 else [rows]
                for column, column_values in zip(self.columns, values):
                    column[fits] = column_values
                fitting = set(fits)
                return [j for j in range(len(infos)) if j not in fitting]
            first = next((info for info in infos if info), None)
            if learned or first is None or not self._learn(first):
                return None
        return None

    def _gather(self, infos: list[dict[str, Any]]) -> list[Any] | None:
        """Each column's values, or None if an info has other keys or a value another type.

        One ``itemgetter`` call per env and one ``set(map(type, ...))`` per column (32
        HalfCheetahs' four keys: ~12-13 µs, where a ``dict.get`` and a type test per key
        and env, then a list per column, took ~17-19)."""
        count, get = len(self.keys), self._get
        if not count:
            return None
        try:
            rows = [get(info) for info in infos if len(info) == count]
        except KeyError:
            return None
        if len(rows) != len(infos):
            return None
        values = list(zip(*rows)) if count > 1 else [rows]
        for kind, array, column_values in zip(self.types, self.arrays, values):
            kinds = set(map(type, column_values))
            if len(kinds) != 1 or kind not in kinds:
                return None
            if array is not None and set(map(_SHAPE_DTYPE, column_values)) != {array}:
                return None
        return values

    def _split(self, infos: list[dict[str, Any]]) -> tuple[list[int], list[Any]] | None:
        """The positions of the infos that fit the columns and their rows of values; None
        if an info that does not fit has a column's key with a value of another type or
        shape (merged first from the columns, that key could get another dtype than the
        first env's, which gymnasium uses)."""
        if not self.keys:
            return None
        count, get, specs = len(self.keys), self._get, self._specs
        fits, rows = [], []
        for j, info in enumerate(infos):
            if len(info) == count:
                try:
                    row = get(info) if count > 1 else (get(info),)
                except KeyError:
                    row = None
                if row is not None and all(map(self._fits, row, self.types, self.arrays)):
                    fits.append(j)
                    rows.append(row if count > 1 else row[0])
                    continue
            for key, value in info.items():
                spec = specs.get(key)
                if spec is not None and not self._fits(value, *spec):
                    return None
        return fits, rows

    @staticmethod
    def _fits(value: Any, kind: type, array: tuple[tuple[int, ...], np.dtype] | None) -> bool:
        return type(value) is kind and (array is None or _SHAPE_DTYPE(value) == array)

    def _learn(self, info: dict[str, Any]) -> bool:
        """Take ``info``'s keys and types as the columns' (False: it cannot be columns, or
        already is, so the step that did not match stays pickled)."""
        specs = [_column_spec(value) for value in info.values()]
        keys = tuple(info)
        if (not keys or None in specs or "final_obs" in keys
                or sum(prod(spec[2]) for spec in specs if spec) > INFO_SLOTS):
            return False
        known = [spec for spec in specs if spec]  # all of them (for the type checker)
        types = tuple(kind for kind, _dtype, _shape in known)
        arrays = tuple((shape, dtype) if kind is np.ndarray else None
                       for kind, dtype, shape in known)
        if (keys, types, arrays) == (self.keys, self.types, self.arrays):
            return False
        self.keys, self.types, self.arrays = keys, types, arrays
        self._get = itemgetter(*keys)
        self._specs = dict(zip(keys, zip(types, arrays)))
        self.block_keys = tuple((key, dtype.str, shape)
                                for key, (_kind, dtype, shape) in zip(keys, known))
        self.columns = [view[self.start:self.stop]
                        for _key, view in column_views(self.raw, self.block_keys)]
        self.told = False
        return True


def column_views(raw: np.ndarray, block_keys: BlockKeys) -> list[tuple[str, np.ndarray]]:
    """Each info column of the block's info bytes ``raw`` as ``(key, view)``: a number's
    column is ``num_envs`` values in one slot, an array's is ``(num_envs, *shape)``, an
    element per slot (views of ``raw``, which the workers write and the main reads).

    Each env owns 8 bytes of each slot whatever the dtype: workers learn their columns
    apart, and a float32 column of one worker must not overlap the float64 column another
    worker keeps in the same slot."""
    num_envs = raw.shape[1] // 8
    cells = raw.reshape(raw.shape[0], num_envs, 8)
    views, slot = [], 0
    for key, dtype_str, shape in block_keys:
        dtype = np.dtype(dtype_str)
        size = prod(shape)
        elements = cells[slot:slot + size, :, :dtype.itemsize].view(dtype)[..., 0]
        view = elements.T.reshape(num_envs, *shape) if shape else elements[0]
        if not np.shares_memory(view, raw):
            raise AssertionError("an info column must be a view of the block")
        views.append((key, view))
        slot += size
    return views


class InfoMerger:
    """Merges packed infos into gymnasium's vector infos for a batch of ``num_envs`` envs,
    with gymnasium's own ``VectorEnv._add_info`` (which sizes arrays by ``num_envs``)."""

    _add_info: Any = VectorEnv._add_info

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self._all_true = np.ones(num_envs, dtype=np.bool_)

    def merge(self, infos: dict[str, Any], packed: Packed,
              position: dict[int, int] | None = None) -> dict[str, Any]:
        """Add one worker's packed infos; ``position`` maps an env to its row in a batch
        (None: the env index is the row)."""
        finals, columns, rest = packed[:3]
        add = self._add_info
        for env, final_obs, final_info in finals:
            row = env if position is None else position[env]
            infos = add(infos, {"final_obs": final_obs, "final_info": final_info}, row)
        for key, (envs, dtype, values) in columns.items():
            rows: Any = envs if position is None else [position[env] for env in envs]
            if rows[-1] - rows[0] + 1 == len(rows):  # every env of a worker: a slice
                rows = slice(rows[0], rows[-1] + 1)
            self._assign(infos, key, dtype, rows, values)
        for env, info in rest:
            infos = add(infos, info, env if position is None else position[env])
        return infos

    def copy_block(self, columns: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
        """The infos of a step in which every worker sent the same info columns: a copy of
        each whole column and an all-True mask (~5 µs for four columns, where a merge
        worker by worker takes ~9 µs per worker)."""
        infos = {}
        for key, column in columns:
            infos[key] = column.copy()
            infos[f"_{key}"] = self._all_true.copy()
        return infos

    def merge_block(self, infos: dict[str, Any], columns: list[tuple[str, np.ndarray]],
                    envs: slice | np.ndarray, rows: slice | np.ndarray) -> None:
        """Add the info columns ``columns`` (``(key, column)``, a column as in the block)
        of the envs ``envs``, which are the rows ``rows`` of this batch."""
        for key, column in columns:
            self._assign(infos, key, column.dtype, rows, column[envs], column.shape[1:])

    def clear_rows(self, infos: dict[str, Any], columns: list[tuple[str, np.ndarray]],
                   rows: list[int]) -> None:
        """Undo :meth:`merge_block` for the rows ``rows`` (their envs' infos were not in
        the columns): zero values and False masks, as before any env had the key."""
        for key, _column in columns:
            infos[key][rows] = 0
            infos[f"_{key}"][rows] = False

    def _assign(self, infos: dict[str, Any], key: str, dtype: Any, rows: Any,
                values: Any, shape: tuple[int, ...] = ()) -> None:
        """``infos[key][rows] = values`` and its mask, creating both as ``_add_info``
        would for the first value (a batch of ``dtype``, of arrays of ``shape``)."""
        array = infos.get(key)
        if array is None:
            if (isinstance(rows, slice) and rows.start == 0
                    and rows.stop == self.num_envs):  # a whole batch (one worker's recv)
                infos[key] = np.array(values, dtype=dtype)
                infos[f"_{key}"] = self._all_true.copy()
                return
            array = infos[key] = np.zeros((self.num_envs, *shape), dtype=dtype)
            mask = infos[f"_{key}"] = np.zeros(self.num_envs, dtype=np.bool_)
        else:
            mask = infos[f"_{key}"]
        array[rows] = values
        mask[rows] = True
