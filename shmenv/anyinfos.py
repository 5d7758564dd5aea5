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
reward terms): those skip the pickle both ways. A worker whose every env returned an info
with the same keys, each value of one plain-number type per key, writes them into its rows
of the block's info columns (:class:`InfoColumns`, one column per key, learned from the
first such step and told to the main once, as ``block_keys``); its reply is then the one
byte :data:`IN_BLOCK`, and the main copies each column's rows with one numpy assignment
(:meth:`InfoMerger.merge_block`), as it would the same values from a pickled column.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv

PLAIN_TYPES = (int, float, bool)
INFO_SLOTS = 16  # the block's info columns: at most this many keys skip the pickle
IN_BLOCK = b"\x01"  # a worker's whole reply when its infos are all in the block's columns
BlockKeys = tuple[tuple[str, str], ...]  # (key, dtype) of each info column, in slot order
Packed = tuple[list[tuple[int, Any, Any]], dict[str, tuple[list[int], str, list[Any]]],
               list[tuple[int, dict[str, Any]]], BlockKeys | None]


def pack_infos(finals: list[tuple[int, Any, Any]], infos: list[tuple[int, dict[str, Any]]],
               block_keys: BlockKeys | None = None) -> Packed:
    """A worker's infos of one step (``infos``: ``(env, info)`` in env order; none if
    ``block_keys`` says they are in the block's info columns)."""
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
    return finals, packed, rest, block_keys


def _column_type(value: Any) -> type | None:
    """The type a block column may hold ``value`` as (gymnasium batches it as that dtype),
    or None: not a plain number, or wider than a column's 8 bytes."""
    kind = type(value)
    if kind in PLAIN_TYPES:
        return kind
    if issubclass(kind, np.number):  # not timedelta64 (a number whose unit is its dtype's)
        dtype = np.dtype(kind)
        return kind if dtype.kind in "biufc" and dtype.itemsize <= 8 else None
    return None


class InfoColumns:
    """A worker's side of the block's info columns: its rows of each column (the block's
    ``(INFO_SLOTS, 8 * num_envs)`` bytes ``raw``) and the keys they hold."""

    def __init__(self, raw: np.ndarray, start: int, stop: int) -> None:
        self.raw, self.start, self.stop = raw, start, stop
        self.keys: tuple[str, ...] = ()
        self.types: tuple[type, ...] = ()
        self._get: Any = None  # itemgetter of the keys
        self.columns: list[np.ndarray] = []
        self.block_keys: BlockKeys = ()
        self.told = False  # whether the main has these block_keys (else they go with them)

    def write(self, infos: list[dict[str, Any]]) -> bool:
        """Write one step's infos (one per env, in env order) into the columns, if each has
        exactly the keys learned (else learned now from the first one) with their types."""
        values = self._gather(infos)
        if values is None:
            if not self._learn(infos[0]):
                return False
            values = self._gather(infos)
            if values is None:
                return False
        for column, column_values in zip(self.columns, values):
            column[:] = column_values
        return True

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
        for kind, column_values in zip(self.types, values):
            kinds = set(map(type, column_values))
            if len(kinds) != 1 or kind not in kinds:
                return None
        return values

    def _learn(self, info: dict[str, Any]) -> bool:
        """Take ``info``'s keys and types as the columns' (False: it cannot be columns, or
        already is, so the step that did not match stays pickled)."""
        types = tuple(_column_type(value) for value in info.values())
        keys = tuple(info)
        if (not keys or len(keys) > INFO_SLOTS or None in types or "final_obs" in keys
                or (keys, types) == (self.keys, self.types)):
            return False
        dtypes = [np.dtype(kind) for kind in types]  # type: ignore[arg-type]
        self.keys, self.types = keys, types  # type: ignore[assignment]
        self._get = itemgetter(*keys)
        self.columns = [column_view(self.raw, slot, dtype)[self.start:self.stop]
                        for slot, dtype in enumerate(dtypes)]
        self.block_keys = tuple((key, dtype.str) for key, dtype in zip(keys, dtypes))
        self.told = False
        return True


def column_view(raw: np.ndarray, slot: int, dtype: np.dtype) -> np.ndarray:
    """Info column ``slot`` of the block's info bytes, as ``num_envs`` values of ``dtype``."""
    return raw[slot, :raw.shape[1] // 8 * dtype.itemsize].view(dtype)


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
        finals, columns, rest, _block_keys = packed
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
                    envs: slice, rows: slice) -> None:
        """Add the info columns ``columns`` (``(key, column)``, a column as in the block)
        of the envs ``envs``, which are the rows ``rows`` of this batch."""
        for key, column in columns:
            self._assign(infos, key, column.dtype, rows, column[envs])

    def _assign(self, infos: dict[str, Any], key: str, dtype: Any, rows: Any,
                values: Any) -> None:
        """``infos[key][rows] = values`` and its mask, creating both as ``_add_info``
        would for the first value (a batch of ``dtype``)."""
        array = infos.get(key)
        if array is None:
            array = infos[key] = np.zeros(self.num_envs, dtype=dtype)
            mask = infos[f"_{key}"] = np.zeros(self.num_envs, dtype=np.bool_)
        else:
            mask = infos[f"_{key}"]
        array[rows] = values
        mask[rows] = True
