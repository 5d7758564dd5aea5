"""shmenv.AsyncVectorEnv behaves as gymnasium's vector envs on the same env functions.

Every test runs shmenv.AsyncVectorEnv next to gymnasium's SyncVectorEnv (the reference
gymnasium's own tests compare AsyncVectorEnv with) and asserts equal observations,
rewards, flags and infos, step by step, in every autoreset mode and for every space kind.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import shmenv
from tests.any_envs import TEST_SPACES, CustomSpace, numeric_info_env, rich_env

pytestmark = pytest.mark.timeout(60)

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]
NUM_ENVS = 5


def assert_same(ours, theirs, what: str) -> None:
    assert data_equivalence(ours, theirs, exact=True), f"{what} differ:\n{ours}\n{theirs}"


def run_both(env_fns, steps: int, mode: AutoresetMode, action_seed: int = 7,
             **kwargs) -> int:
    """Step shmenv.AsyncVectorEnv and SyncVectorEnv side by side with the same actions;
    returns how many episodes ended (so a test can check it saw some)."""
    kwargs.setdefault("num_workers", 2)
    ours = shmenv.AsyncVectorEnv(env_fns, autoreset_mode=mode, **kwargs)
    theirs = SyncVectorEnv(env_fns, autoreset_mode=mode)
    ended = 0
    try:
        assert ours.single_observation_space == theirs.single_observation_space
        assert ours.observation_space == theirs.observation_space
        assert ours.action_space == theirs.action_space
        assert ours.metadata == theirs.metadata
        seed = [11, 12, 13, 14, 15] if mode == AutoresetMode.SAME_STEP else 3
        obs, infos = ours.reset(seed=seed)
        obs_ref, infos_ref = theirs.reset(seed=seed)
        assert_same(obs, obs_ref, "reset observations")
        assert_same(infos, infos_ref, "reset infos")
        ours.action_space.seed(action_seed)
        for step in range(steps):
            actions = ours.action_space.sample()
            result = ours.step(actions)
            reference = theirs.step(actions)
            for name, a, b in zip(("obs", "rewards", "terminations", "truncations", "infos"),
                                  result, reference):
                assert_same(a, b, f"step {step} {name}")
            done = result[2] | result[3]
            ended += int(done.sum())
            if mode == AutoresetMode.DISABLED and done.any():
                options = {"reset_mask": done, "level": step}
                assert_same(ours.reset(options=dict(options)),
                            theirs.reset(options=dict(options)), f"step {step} reset_mask")
    finally:
        ours.close()
        theirs.close()
    return ended


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("space", list(TEST_SPACES), ids=str)
def test_same_results_as_sync_vector_env(space, mode, no_leaked_segments):
    """Every space kind through the block (Text pickled), in every autoreset mode, with
    the same space as observations and actions: obs, rewards, flags and infos equal."""
    the_space = TEST_SPACES[space]
    fns = [rich_env(i, observation_space=the_space, action_space=the_space)
           for i in range(NUM_ENVS)]
    assert run_both(fns, 25, mode) > 5


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_pickled_observations_match_too(mode, no_leaked_segments):
    """shared_memory=False (and custom spaces) send observations pickled, same results."""
    fns = [rich_env(i, observation_space=TEST_SPACES["dict"]) for i in range(NUM_ENVS)]
    assert run_both(fns, 20, mode, shared_memory=False) > 3
    custom = [rich_env(i, observation_space=CustomSpace(), action_space=spaces.Discrete(2))
              for i in range(NUM_ENVS)]
    assert run_both(custom, 20, mode, shared_memory=False) > 3


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_cartpole_matches_sync_vector_env(mode, no_leaked_segments):
    """The real thing: CartPole-v1 made by gym.make, as gymnasium's own tests do."""
    fns = [lambda: gym.make("CartPole-v1") for _ in range(NUM_ENVS)]
    assert run_both(fns, 60, mode) > 5


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_numeric_infos_through_the_block_match_too(mode, no_leaked_segments):
    """Infos of the same numbers every step travel in the block's info columns: equal to
    SyncVectorEnv's while their keys and types hold and when they change (a new key, a
    value of another type, a reset's info), relayed or not, observations pickled or not."""
    fns = [numeric_info_env(i) for i in range(NUM_ENVS)]
    assert run_both(fns, 40, mode) > 10
    assert run_both(fns, 40, mode, num_workers=5, relay_fanout=2) > 10
    assert run_both(fns, 40, mode, shared_memory=False, relay_fanout=0) > 10


@pytest.mark.parametrize("fanout", [0, 2])
def test_relay_trees_give_the_same_results(fanout, no_leaked_segments):
    """Relayed (a tree of 5 workers, fan-out 2) or not (0): the same results."""
    fns = [rich_env(i, observation_space=TEST_SPACES["dict"]) for i in range(NUM_ENVS)]
    assert run_both(fns, 25, AutoresetMode.SAME_STEP, num_workers=5,
                    relay_fanout=fanout) > 5
    with shmenv.AsyncVectorEnv(fns, num_workers=5, relay_fanout=fanout) as envs:
        assert envs.relayed == (fanout > 0)


def test_one_worker_per_env_and_one_env(no_leaked_segments):
    """Edge splits: as many workers as envs, and a single env."""
    fns = [rich_env(i) for i in range(3)]
    with shmenv.AsyncVectorEnv(fns, num_workers=3) as envs:
        assert envs.worker_env_ranges == ((0, 1), (1, 2), (2, 3))
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (3, 3)
    with shmenv.AsyncVectorEnv(fns[:1]) as envs:
        assert envs.num_envs == 1 and envs.num_workers == 1
        obs, *_ = envs.step(np.array([1]))
        assert obs.shape == (1, 3)


def test_copy_false_returns_the_block_and_copy_true_a_copy(no_leaked_segments):
    fns = [rich_env(i) for i in range(4)]
    with shmenv.AsyncVectorEnv(fns, copy=False) as envs:
        first, _ = envs.reset(seed=1)
        second, *_ = envs.step(np.zeros(4, dtype=np.int64))
        assert first is second  # the block's view, overwritten in place
        first[0] = 0.5  # writable, as gymnasium's shared-memory view
    with shmenv.AsyncVectorEnv(fns, copy=True) as envs:
        first, _ = envs.reset(seed=1)
        kept = first.copy()
        envs.step(np.zeros(4, dtype=np.int64))
        np.testing.assert_array_equal(first, kept)


def test_call_get_attr_set_attr_render_and_metadata(no_leaked_segments):
    fns = [rich_env(i, render_mode="rgb_array") for i in range(3)]
    with shmenv.AsyncVectorEnv(fns, autoreset_mode="SameStep") as envs:
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert envs.metadata["render_fps"] == 17
        assert envs.render_mode == "rgb_array"
        envs.reset(seed=42)
        assert envs.np_random_seed == (42, 43, 44)
        envs.set_attr("sleep_s", [0.0, 0.0, 0.0])
        envs.set_attr("length", 100)
        assert envs.get_attr("length") == (100, 100, 100)
        envs.set_attr("t", [1, 2, 3])
        frames = envs.render()
        assert isinstance(frames, tuple) and [f[0, 0, 0] for f in frames] == [1, 2, 3]
        envs.call_async("render")
        assert [f[0, 0, 0] for f in envs.call_wait()] == [1, 2, 3]
        assert envs.call("_observe")[0].shape == (3,)
    assert "autoreset_mode" not in fns[0]().metadata  # the env's own metadata untouched


def test_reset_mask_keeps_the_other_envs_state(no_leaked_segments):
    fns = [rich_env(i) for i in range(4)]
    with shmenv.AsyncVectorEnv(fns, autoreset_mode="Disabled", num_workers=2) as envs:
        first, _ = envs.reset(seed=[5, 6, 7, 8])
        stepped, *_ = envs.step(np.array([0, 1, 2, 0]))
        mask = np.array([True, False, False, True])
        again, infos = envs.reset(seed=[5, 6, 7, 8], options={"reset_mask": mask, "k": 1})
        np.testing.assert_array_equal(again[mask], first[mask])
        np.testing.assert_array_equal(again[~mask], stepped[~mask])
        assert infos["_options"].tolist() == mask.tolist()
        assert envs.get_attr("resets") == (3, 2, 2, 3)  # made, reset(seed), reset_mask


def test_spaces_that_differ_between_envs_are_refused(no_leaked_segments):
    fns = [rich_env(0), rich_env(1, observation_space=spaces.Box(-1, 1, (4,), np.float32))]
    with pytest.raises(RuntimeError, match="env 1 has Box"):
        shmenv.AsyncVectorEnv(fns)
    fns = [rich_env(0), rich_env(1, action_space=spaces.Discrete(4))]
    with pytest.raises(RuntimeError, match="env 1 has the action space"):
        shmenv.AsyncVectorEnv(fns, num_workers=1)


def test_packed_infos_merge_exactly_as_gymnasium():
    """Numbers travel as columns, the rest as records; the merge equals _add_info's, also
    when the first env's value type decides a dtype, keys are missing or types mix."""
    from shmenv.anyinfos import InfoMerger, pack_infos

    per_env = [{"a": 1, "b": "x", "n": np.float32(0.5)}, {},
               {"a": 2.5, "c": np.bool_(True), "n": np.float32(1.5)},
               {"b": 3, "d": {"e": 1}, "arr": np.arange(2)}, {"a": np.int16(7), "f": True}]
    merger = InfoMerger(len(per_env))
    expected: dict = {}
    for env, info in enumerate(per_env):
        expected = merger._add_info(expected, info, env)
    ours: dict = {}
    for start, stop in ((0, 2), (2, 5)):  # two workers, merged in order
        infos = [(env, per_env[env]) for env in range(start, stop) if per_env[env]]
        ours = merger.merge(ours, pack_infos([], infos))
    assert_same(ours, expected, "merged infos")
    assert ours["a"].dtype == np.int64 and ours["n"].dtype == np.float32


def _merged_from_block(raw, block_keys, envs, rows, num_envs) -> dict:
    from shmenv.anyinfos import InfoMerger, column_views

    ours: dict = {}
    InfoMerger(num_envs).merge_block(ours, column_views(raw, block_keys), envs, rows)
    return ours


def _add_infos(per_env: dict[int, dict], num_envs: int) -> dict:
    """gymnasium's own merge of ``{env: info}``, env by env."""
    from shmenv.anyinfos import InfoMerger

    merger, expected = InfoMerger(num_envs), {}
    for env, info in sorted(per_env.items()):
        expected = merger._add_info(expected, info, env)
    return expected


def test_info_columns_take_steady_numbers_only():
    """A worker's infos go into the block's info columns when every env has the same keys
    with one plain-number type per key; the main's copy equals _add_info's merge. Anything
    else (another type, np.bool_, timedelta64, more keys than columns) stays pickled."""
    from shmenv.anyinfos import INFO_SLOTS, InfoColumns

    raw = np.zeros((INFO_SLOTS, 8 * 4), np.uint8)
    columns = InfoColumns(raw, 1, 4)  # a worker of envs 1-3 out of 4
    infos = [{"x": 0.5 * i, "n": i, "f": np.float32(i) / 3, "b": i % 2 == 0}
             for i in range(1, 4)]
    assert columns.write(infos) == []
    assert columns.block_keys == (("x", "<f8", ()), ("n", "<i8", ()), ("f", "<f4", ()),
                                  ("b", "|b1", ()))
    assert_same(_merged_from_block(raw, columns.block_keys, slice(1, 4), slice(1, 4), 4),
                _add_infos(dict(enumerate(infos, start=1)), 4), "merged infos")
    assert columns.write([*infos[:2], {**infos[2], "n": 3.0}]) is None
    assert columns.write([{"flag": np.bool_(True)}] * 3) is None
    assert columns.write([{"wait": np.timedelta64(1, "s")}] * 3) is None
    assert columns.write([{f"k{i}": i for i in range(INFO_SLOTS + 1)}] * 3) is None
    assert columns.write([{"y": 1}] * 3) == [] and columns.block_keys == (("y", "<i8", ()),)


def test_info_columns_take_numeric_arrays_an_element_per_slot():
    """A numeric array of one shape and dtype per key (Humanoid's tendon lengths) is a
    column of (num_envs, *shape), one slot per element: merged as _add_info batches it.
    Arrays of another shape or dtype, object or empty arrays, or more elements than slots
    stay pickled."""
    from shmenv.anyinfos import INFO_SLOTS, InfoColumns

    raw = np.zeros((INFO_SLOTS, 8 * 5), np.uint8)
    columns = InfoColumns(raw, 2, 5)
    infos = [{"x": float(i), "tendon": np.array([i, -i], np.float64),
              "grid": np.arange(6, dtype=np.int32).reshape(2, 3) * i,
              "mask": np.array([True, i % 2 == 0])} for i in range(3)]
    assert columns.write(infos) == []
    assert columns.block_keys == (("x", "<f8", ()), ("tendon", "<f8", (2,)),
                                  ("grid", "<i4", (2, 3)), ("mask", "|b1", (2,)))
    ours = _merged_from_block(raw, columns.block_keys, slice(2, 5), slice(2, 5), 5)
    assert_same(ours, _add_infos({2 + j: info for j, info in enumerate(infos)}, 5),
                "merged array infos")
    assert ours["grid"].shape == (5, 2, 3) and ours["grid"].dtype == np.int32
    assert columns.write([*infos[:2], {**infos[2], "tendon": np.zeros(3)}]) is None
    assert columns.write([*infos[:2], {**infos[2], "tendon": np.zeros(2, np.float32)}]) is None
    assert columns.write([{"o": np.array([None, 1])}] * 3) is None
    assert columns.write([{"e": np.zeros(0)}] * 3) is None
    assert columns.write([{"big": np.zeros(INFO_SLOTS + 1)}] * 3) is None


def test_info_columns_skip_the_envs_that_just_reset():
    """In a step where some envs return another info (a reset's, or none), the others
    still go through the columns and the reply names the ones listed; merged, equal to
    _add_info's. A listed env whose value for a column's key has another type (it could
    decide that key's dtype) makes the whole step listed."""
    from shmenv.anyinfos import INFO_SLOTS, InfoColumns, InfoMerger, column_views, pack_infos

    raw = np.zeros((INFO_SLOTS, 8 * 6), np.uint8)
    columns = InfoColumns(raw, 2, 6)  # envs 2-5 of 6

    def step_info(i: int) -> dict:
        return {"x": 0.5 * i, "tendon": np.array([i, 2.0 * i]), "n": i}

    reset_info = {"x": 0.0, "tendon": np.zeros(2)}
    assert columns.write([step_info(i) for i in range(4)]) == []
    for infos in ([reset_info, step_info(1), {}, step_info(3)],
                  [step_info(0), {"other": "text"}, step_info(2), reset_info]):
        skipped = columns.write(infos)
        assert skipped == [j for j, info in enumerate(infos)
                           if info.keys() != {"x", "tendon", "n"}]
        listed = [(2 + j, infos[j]) for j in skipped if infos[j]]
        merger, views, ours = InfoMerger(6), column_views(raw, columns.block_keys), {}
        merger.merge_block(ours, views, slice(2, 6), slice(2, 6))  # as the main does
        merger.clear_rows(ours, views, [2 + j for j in skipped])
        ours = merger.merge(ours, pack_infos([], listed, columns.block_keys,
                                             [2 + j for j in skipped]))
        expected = _add_infos({2 + j: info for j, info in enumerate(infos) if info}, 6)
        assert_same(ours, expected, f"partial step {infos}")
    assert columns.write([step_info(0), {"x": 1}, step_info(2), step_info(3)]) is None
    assert columns.write([{}, {}, {}, {}]) is None


def test_workers_with_other_columns_in_a_slot_do_not_overlap():
    """Two workers learn their columns apart: a float32 column of one and a float64 one of
    the other in the same slot keep each env's values (each env owns 8 bytes per slot)."""
    from shmenv.anyinfos import INFO_SLOTS, InfoColumns, column_views

    raw = np.zeros((INFO_SLOTS, 8 * 4), np.uint8)
    first, second = InfoColumns(raw, 0, 2), InfoColumns(raw, 2, 4)
    assert first.write([{"a": 1.5, "p": np.array([2.5, 3.5])}] * 2) == []
    assert second.write([{"f": np.float32(0.5), "q": np.array([7, 8], np.int16)}] * 2) == []
    views = dict(column_views(raw, first.block_keys))
    assert views["a"][:2].tolist() == [1.5, 1.5]
    assert views["p"][:2].tolist() == [[2.5, 3.5]] * 2
    views = dict(column_views(raw, second.block_keys))
    assert views["f"][2:].tolist() == [0.5, 0.5] and views["q"][2:].tolist() == [[7, 8]] * 2


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_humanoid_matches_sync_vector_env(mode, no_leaked_segments):
    """A heavy MuJoCo env made by gym.make: its infos (numbers and two-element arrays,
    fewer keys at reset) through the block's columns, falls and resets, equal to
    SyncVectorEnv's, relayed or not."""
    pytest.importorskip("mujoco")
    fns = [lambda: gym.make("Humanoid-v5") for _ in range(NUM_ENVS)]
    assert run_both(fns, 40, mode) > 3
    assert run_both(fns, 25, mode, num_workers=5, relay_fanout=2) > 1
