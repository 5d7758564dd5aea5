"""The pure planning rules and the shared action validator, without starting a process."""

from __future__ import annotations

import numpy as np
import pytest

from shmenv.actions import check_actions
from shmenv.planning import env_seeds, plan_workers, spin_budget, split_envs, subtree_stops


def test_env_seeds_count_up_from_an_int_or_take_a_sequence():
    assert env_seeds(None, 3) == [None, None, None]
    assert env_seeds(10, 3) == [10, 11, 12]
    assert env_seeds(np.int64(5), 2) == [5, 6]
    assert env_seeds([7, 3], 2) == [7, 3]
    with pytest.raises(ValueError, match="got 1 seeds for 2 envs"):
        env_seeds([1], 2)


def test_split_envs_is_contiguous_and_balanced():
    assert split_envs(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert split_envs(3, 3) == [(0, 1), (1, 2), (2, 3)]


def test_subtree_stops_cover_each_workers_children():
    ranges = split_envs(13, 7)
    children = [[1, 4], [2, 3], [], [], [5, 6], [], []]
    assert subtree_stops(ranges, children) == [13, 8, 6, 8, 13, 12, 13]


def test_plan_workers_defaults_to_one_per_core_and_checks_a_given_count():
    assert plan_workers(8, 8, None, cores=2) == 2
    assert plan_workers(3, 3, None, cores=16) == 3
    assert plan_workers(16, 8, None, cores=2) == 2  # async: whole workers per batch
    with pytest.raises(ValueError, match="num_workers must be an int in"):
        plan_workers(2, 2, 3, cores=2)


def test_spin_budget_is_off_when_oversubscribed_and_checks_its_argument():
    assert spin_budget(0, 1) == 0.0
    assert spin_budget(250, 1000) == 250.0  # an explicit budget is kept
    assert spin_budget(None, 10_000) == 0.0  # more workers than cores: never spin
    with pytest.raises(ValueError, match="worker_spin_us must be a finite number >= 0"):
        spin_budget(-1, 1)


def test_check_actions_accepts_object_ints_and_explains_ragged_lists():
    out = check_actions(np.array([1, 1, 3], dtype=object), 3, 4, "breakout")
    assert out.dtype.kind == "i" and out.tolist() == [1, 1, 3]
    with pytest.raises(ValueError, match="flat sequence of 2 ints"):
        check_actions([[1, 2], [3]], 2, 4, "breakout")
    with pytest.raises(ValueError, match=r"actions\[1\] = 4 is out of range"):
        check_actions([0, 4], 2, 4, "breakout")
