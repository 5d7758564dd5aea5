"""The one validator of actions and env ids, shared by synchronous steps, async batches and
Ray."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_actions(actions: Any, count: int, num_actions: int, game: str) -> np.ndarray:
    """``actions`` as an integer array of shape ``(count,)``, or a ValueError/TypeError
    naming the first bad entry and its value. Accepts any sequence or array of ints,
    including an object array of Python ints; rejects floats (even whole ones), bools,
    None, strings and ragged lists."""
    if actions is None or isinstance(actions, (str, bytes)):
        raise TypeError(f"actions must be a sequence of {count} ints (one per "
                        f"env), got {actions!r}")
    try:
        array = np.asarray(actions)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"actions must be a flat sequence of {count} ints (one "
                         f"per env); could not read {actions!r} as one: {exc}") from None
    if array.shape != (count,):
        what = (f"{array.shape[0]} actions" if array.ndim == 1
                else f"an array of shape {array.shape}")
        raise ValueError(f"actions must have shape ({count},), one int per env; got {what}")
    if array.dtype.kind not in "iu":
        array = _integer_actions(array)
    # argmin/argmax, not min/max: a plain loop instead of numpy's ufunc reduction
    # machinery, which costs ~20 µs on the main's cold caches (see ShmVectorEnv's buffers).
    if count and (array[array.argmin()] < 0 or array[array.argmax()] >= num_actions):
        index = int(np.flatnonzero((array < 0) | (array >= num_actions))[0])
        raise ValueError(f"actions[{index}] = {array[index].item()!r} is out of range: "
                         f"{game} has actions 0..{num_actions - 1}")
    return array


def check_env_ids(env_ids: Any, num_envs: int) -> np.ndarray:
    """``env_ids`` as a 1-D int array of distinct ids in ``[0, num_envs)``, or a TypeError/
    ValueError saying what is wrong. Shared by async batches and Ray."""
    ids = np.asarray(env_ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"env_ids must be a 1-D array of ints, got {ids.dtype} "
                        f"with shape {ids.shape}")
    if not ids.size:
        raise ValueError("env_ids is empty")
    if ids.min() < 0 or ids.max() >= num_envs:
        bad = ids[(ids < 0) | (ids >= num_envs)][0]
        raise ValueError(f"env id {bad} is out of range: this env has ids 0..{num_envs - 1}")
    if np.bincount(ids, minlength=num_envs).max() > 1:
        raise ValueError("env_ids lists an env more than once")
    return ids


def _integer_actions(array: np.ndarray) -> np.ndarray:
    """Actions given with a non-integer dtype: an int64 copy if every entry is a Python or
    numpy int (an object array from a list of ints mixed with big ones), else a TypeError
    naming the first entry that is not (floats, even whole ones, NaN, None, strings, bools).
    """
    values = array.tolist()
    not_int = [i for i, v in enumerate(values)
               if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
    if not_int:
        # Name a NaN or a fraction before a whole float such as 2.0.
        whole = [i for i in not_int if isinstance(values[i], float) and values[i].is_integer()]
        index = next((i for i in not_int if i not in whole), not_int[0])
        value = values[index]
        hint = " (cast with .astype(int) if you meant it)" if index in whole else ""
        raise TypeError(f"actions must be integers: actions[{index}] = {value!r} "
                        f"({type(value).__name__}, array dtype {array.dtype}){hint}")
    out_of_int64 = [i for i, v in enumerate(values) if not -2**63 <= v < 2**63]
    if out_of_int64:
        index = out_of_int64[0]
        raise ValueError(f"actions[{index}] = {values[index]!r} is out of range")
    return np.array(values, dtype=np.int64)
