"""Replay one seeded action stream through a shmenv path and the reference, step by step.

The reference is :class:`shmenv.baseline.Game` (the labml design). Every path is reduced to
a list of :data:`Step` records — a digest of the uint8 stack, the reward, the done flag and
the episode info — and :func:`first_difference` names the first step where two lists part.
Two stacks' bytes are equal exactly when their BLAKE2b-128 digests are, so comparing digests
compares every pixel. ``bench/exact_sweep.py`` runs this over every game, the tests over a
subset; docs/exactness.md has the result.

Paths (``PATHS``):

* ``"game"``: one in-process :class:`~shmenv.atari.AtariGame` driven as the drop-in worker
  drives it (construct, ``reset()``, ``step``; ``reset()`` after a done);
* ``"dropin"``: ``shmenv.Worker(seed, game=...)`` with the labml trainer's commands;
* ``"vector-same"`` / ``"vector-next"``: ``shmenv.make(game, len(seeds), seed=seeds[0])``
  with ``SAME_STEP`` / ``NEXT_STEP`` autoreset. Under ``NEXT_STEP`` the step after a done
  only resets (its action is ignored) and returns the reset stack, which the reference
  returned on the done step itself; the done step's own obs is the final stack, which the
  reference never shows. The replay aligns the two accordingly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

Step = tuple[bytes, float | None, bool | None, dict | None]
"""(stack digest, reward, done, info); the first step of a trace is the reset (None, ...)."""

Actions = Sequence[int] | np.ndarray
"""One env's actions, in order."""

PATHS = ("game", "dropin", "vector-same", "vector-next")


def registered_games() -> list[str]:
    """Games gymnasium registers as ``<Game>NoFrameskip-v4`` once ale-py's envs are in."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    suffix = "NoFrameskip-v4"
    return sorted(env_id[: -len(suffix)] for env_id in gym.registry
                  if env_id.endswith(suffix) and "/" not in env_id and "-ram" not in env_id)


def digest(stack: np.ndarray) -> bytes:
    """BLAKE2b-128 of the stack as uint8 bytes."""
    return hashlib.blake2b(np.ascontiguousarray(stack, dtype=np.uint8).tobytes(),
                           digest_size=16).digest()


def actions_for(seed: int, steps: int, num_actions: int) -> np.ndarray:
    """The random action stream the env seeded ``seed`` replays; a shorter run replays a
    prefix of a longer one, so a difference found by the sweep shows up in CI too."""
    return np.random.default_rng(seed).integers(0, num_actions, size=steps)


def reference_trace(game: str, seed: int, actions: Actions,
                    game_class: type | None = None) -> list[Step]:
    """The reference's (or a stand-in ``game_class``'s) trace for ``actions``."""
    from shmenv.baseline import Game

    env = (game_class or Game)(seed, game)
    stack = env.reset()
    _check_integral(stack)
    trace: list[Step] = [(digest(stack), None, None, None)]
    for action in actions:
        stack, reward, done, info = env.step(int(action))
        _check_integral(stack)
        trace.append((digest(stack), float(reward), bool(done), info))
    env.env.close()
    return trace


def _check_integral(stack: np.ndarray) -> None:
    if stack.shape != (4, 84, 84) or not np.array_equal(stack.astype(np.uint8), stack):
        raise AssertionError("the reference's stack is not (4, 84, 84) whole numbers 0..255")


def game_trace(game: str, seed: int, actions: Actions,
               make_game: Callable[..., Any] | None = None) -> list[Step]:
    """An in-process AtariGame (or ``make_game(game, seed)``), driven as the drop-in worker
    drives it."""
    from shmenv.atari import AtariGame

    env = (make_game or AtariGame)(game, seed)
    env.reset()
    trace: list[Step] = [(digest(env.stack), None, None, None)]
    for action in actions:
        reward, terminated, truncated = env.step(int(action))
        done = terminated or truncated
        info = None
        if done:
            info = {"reward": env.episode_return, "length": env.episode_length}
            env.reset()
        trace.append((digest(env.stack), float(reward), bool(done), info))
    return trace


def dropin_traces(game: str, seeds: Sequence[int],
                  actions: Sequence[Actions]) -> list[list[Step]]:
    """``shmenv.Worker(seed, game=game)`` per seed, driven by the labml trainer's loop."""
    import shmenv

    workers = [shmenv.Worker(seed, game=game) for seed in seeds]
    traces: list[list[Step]] = [[] for _ in seeds]
    try:
        for w in workers:
            w.child.send(("reset", None))
        for i, w in enumerate(workers):
            traces[i].append((digest(w.child.recv()), None, None, None))
        for k in range(len(actions[0])):
            for i, w in enumerate(workers):
                w.child.send(("step", int(actions[i][k])))
            for i, w in enumerate(workers):
                stack, reward, done, info = w.child.recv()
                traces[i].append((digest(stack), float(reward), bool(done), info))
    finally:
        for w in workers:
            w.child.send(("close", None))
        for w in workers:
            w.process.join(timeout=10)
    return traces


def vector_traces(game: str, seeds: Sequence[int], actions: Sequence[Actions],
                  next_step: bool) -> list[list[Step]]:
    """``shmenv.make(game, len(seeds), seed=seeds[0])``; env i has seed ``seeds[0] + i``.

    Under NEXT_STEP, each env's trace skips its final-obs step's stack (it holds the done
    step's reward, done and info with the reset step's stack) so that it lines up with the
    reference's; the reset step consumes no action.
    """
    import shmenv

    n = len(seeds)
    if list(seeds) != [seeds[0] + i for i in range(n)]:
        raise ValueError(f"vector seeds must be consecutive, got {list(seeds)}")
    steps = len(actions[0])
    mode = AutoresetMode.NEXT_STEP if next_step else AutoresetMode.SAME_STEP
    traces: list[list[Step]] = [[] for _ in seeds]
    with shmenv.make(game, n, seed=seeds[0], num_workers=1, autoreset_mode=mode) as env:
        obs, _ = env.reset()
        for i in range(n):
            traces[i].append((digest(obs[i]), None, None, None))
        used = [0] * n  # actions consumed per env
        pending: list[Step | None] = [None] * n  # NEXT_STEP: a done step awaiting its reset
        batch = np.zeros(n, dtype=np.int64)
        while min(used) < steps:
            for i in range(n):
                batch[i] = 0 if pending[i] is not None or used[i] >= steps else actions[i][used[i]]
            obs, rewards, terms, truncs, infos = env.step(batch)
            for i in range(n):
                waiting = pending[i]
                if waiting is not None:  # this step only reset env i
                    traces[i].append((digest(obs[i]), *waiting[1:]))
                    pending[i] = None
                    continue
                if used[i] >= steps:
                    continue
                used[i] += 1
                done = bool(terms[i] or truncs[i])
                info = None
                if done:
                    info = {"reward": float(infos["episode"]["r"][i]),
                            "length": int(infos["episode"]["l"][i])}
                step: Step = (digest(obs[i]), float(rewards[i]), done, info)
                if done and next_step:
                    pending[i] = step
                else:
                    traces[i].append(step)
        if any(p is not None for p in pending):  # a done on the last action: reset stack due
            obs, *_ = env.step(np.zeros(n, dtype=np.int64))
            for i, due in enumerate(pending):
                if due is not None:
                    traces[i].append((digest(obs[i]), *due[1:]))
    return traces


def restore_check(game: str, seed: int, steps: int, episode_frames: int = 1200) -> str | None:
    """Restore against ALE's real reset on ``game``, with episodes cut at ``episode_frames``
    so that even games whose episodes outlast a sweep reset many times.

    Both games take the same actions; one restores the cloned start state (forced, whatever
    the ROM), the other calls ``reset_game()``. Returns None when they agree step for step,
    else the first difference.
    """
    from shmenv.atari import AtariGame
    from shmenv.games import GameOptions

    class Restoring(AtariGame):
        def _restore_is_exact(self) -> bool:
            return True

    options = GameOptions(max_episode_frames=episode_frames)
    actions = actions_for(seed, steps, AtariGame(game, seed).num_actions)
    restoring = game_trace(game, seed, actions, lambda g, s: Restoring(g, s, options))
    resetting = game_trace(game, seed, actions, lambda g, s: AtariGame(
        g, s, GameOptions(max_episode_frames=episode_frames, fast_reset=False)))
    return first_difference(resetting, restoring)


def first_difference(reference: list[Step], other: list[Step]) -> str | None:
    """None when the traces agree step for step, else ``"step k: what differs"``."""
    if len(reference) != len(other):
        return f"length {len(other)} != reference {len(reference)}"
    names = ("stack", "reward", "done", "info")
    for k, (ref, got) in enumerate(zip(reference, other)):
        for name, a, b in zip(names, ref, got):
            if a != b:
                shown = "" if name == "stack" else f" {b!r} != reference {a!r}"
                return f"step {k}: {name}{shown}"
    return None


def episodes(trace: list[Step]) -> int:
    """Episode ends in a trace."""
    return sum(bool(done) for _, _, done, _ in trace[1:])


def compare_paths(game: str, seeds: Sequence[int], steps: int,
                  paths: Sequence[str] = PATHS) -> dict[str, Any]:
    """Run every path in ``paths`` for ``seeds`` and compare each with the reference.

    Returns ``{"game", "steps", "episodes", "reset_kind", "paths": {path: first
    difference or None}}``; a difference names the seed.
    """
    from shmenv.atari import AtariGame

    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise ValueError(f"unknown paths {unknown}; the paths are {PATHS}")
    probe = AtariGame(game, seeds[0])
    n_actions, reset_kind = probe.num_actions, probe.reset_kind
    del probe
    actions = [actions_for(seed, steps, n_actions) for seed in seeds]
    refs = [reference_trace(game, seed, a) for seed, a in zip(seeds, actions)]
    found: dict[str, str | None] = {}
    for path in paths:
        if path == "game":
            got = [game_trace(game, seed, a) for seed, a in zip(seeds, actions)]
        elif path == "dropin":
            got = dropin_traces(game, seeds, actions)
        else:
            got = vector_traces(game, seeds, actions, next_step=path == "vector-next")
        found[path] = next((f"seed {seed} {diff}" for seed, ref, trace in zip(seeds, refs, got)
                            if (diff := first_difference(ref, trace)) is not None), None)
    return {"game": game, "steps": steps, "episodes": sum(episodes(r) for r in refs),
            "reset_kind": reset_kind, "paths": found}
