"""The actors' side of :mod:`shmenv.ray`: what each Ray actor runs, how an actor is named in
errors, how batches are split among actors and laid end to end, and how actors are released.

``import ray`` below is Ray itself (absolute imports), not :mod:`shmenv.ray`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.exceptions

from shmenv.errors import ShmenvError, WorkerDiedError, WorkerError, env_error

CLOSE_TIMEOUT_S = 10.0

StepResult = tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class ActorLostError(WorkerDiedError):
    """A Ray actor (or the node it ran on) was lost while the learner waited for it."""


class ActorError(WorkerError):
    """A Ray actor's vector env raised; the message carries the actor's own error."""


class ActorStartError(ShmenvError):
    """Ray could not place or start an actor (too few CPUs in the cluster, a bad option)."""


class _EnvActor:
    """The code each Ray actor runs: one vector env on the actor's node, built by ``build``
    (a picklable factory: a ShmVectorEnv of Atari games, or a shmenv.AsyncVectorEnv over
    the actor's share of the env functions).

    ``step`` returns the vector env's obs view of shared memory as it is: Ray serialises
    a method's return value (copying the array into its object store) before the actor
    runs its next method, and the view only changes on the next step, so nothing outside
    this process ever sees the shared block.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self.env = build()

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_ip": ray.util.get_node_ip_address(),
            "worker_pids": list(getattr(self.env, "worker_pids", ())),
            "seeds": list(getattr(self.env, "seeds", ())),
            "observation_space": self.env.single_observation_space,
            "action_space": self.env.single_action_space,
            "metadata": dict(self.env.metadata),
            "render_mode": getattr(self.env, "render_mode", None),
        }

    def reset(self, seeds: list[int | None] | None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if options is None:
            return self.env.reset(seed=seeds)
        return self.env.reset(seed=seeds, options=options)

    def step(self, actions: Any) -> StepResult:
        return self.env.step(actions)

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return self.env.call(name, *args, **kwargs)

    def set_attr(self, name: str, values: list[Any]) -> None:
        self.env.set_attr(name, values)

    def close(self) -> None:
        self.env.close()


RemoteEnvActor = ray.remote(max_restarts=0, max_task_retries=0)(_EnvActor)


@dataclass
class ActorInfo:
    """Where one actor runs and which envs it owns, for error messages and tests."""

    index: int
    env_start: int
    env_stop: int
    pid: int | None = None
    node_ip: str | None = None
    worker_pids: tuple[int, ...] = ()
    seeds: tuple[int | None, ...] = ()
    env_class: str = "ShmVectorEnv"  # the vector env the actor holds, for messages

    def describe(self) -> str:
        start, stop = self.env_start, self.env_stop
        envs = f"env {start}" if stop - start == 1 else f"envs {start}-{stop - 1}"
        where = ", ".join(part for part in (
            f"node {self.node_ip}" if self.node_ip else "",
            f"pid {self.pid}" if self.pid else "",
        ) if part)
        return f"shmenv Ray actor {self.index} ({envs}" + (f", {where})" if where else ")")


def actor_error(info: ActorInfo, exc: BaseException) -> ShmenvError:
    """The shmenv error for a Ray failure of the actor ``info`` describes: lost (the actor,
    its node or its workers died) or failed (its vector env raised)."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, ShmenvError):
        message = (f"{info.describe()} failed: its {info.env_class} (envs numbered from 0 "
                   f"within the actor) raised {type(cause).__name__}: "
                   f"{str(cause).rstrip('.')}")
        error: ShmenvError
        if isinstance(cause, WorkerDiedError):
            error = ActorLostError(message)
        elif isinstance(cause, WorkerError):  # also the env's builtin type, as locally
            error = env_error(message, cause.worker_type, cause.worker_traceback, ActorError)
        else:
            error = ActorError(message)
    elif isinstance(exc, ray.exceptions.RayTaskError):
        error = ActorError(f"{info.describe()} raised {ray_reason(exc)}")
    else:
        error = ActorLostError(
            f"{info.describe()} was lost ({type(exc).__name__}: {ray_reason(exc)})"
        )
    error.args = (error.args[0].rstrip(".") + ". Every actor was released and this env "
                  "is closed; create a new one.",)
    return error


def lay_rows(parts: list[Any], out: Any = None, starts: list[int] | None = None) -> Any:
    """Batches laid end to end: arrays, or dicts/tuples of them (a Dict or Tuple space's
    batch). With ``out`` (a batch of the same structure) they are written into it, part k
    at row ``starts[k]`` (default: one after another), and ``out`` is returned."""
    sample = parts[0]
    if isinstance(sample, dict):
        return {key: lay_rows([part[key] for part in parts],
                              None if out is None else out[key], starts) for key in sample}
    if isinstance(sample, tuple):
        return tuple(lay_rows([part[i] for part in parts], None if out is None else out[i],
                              starts) for i in range(len(sample)))
    if out is None:
        return np.concatenate(parts)
    row = 0
    for k, part in enumerate(parts):
        row = row if starts is None else starts[k]
        out[row:row + len(part)] = part
        row += len(part)
    return out


def take_rows(batch: Any, rows: Any) -> Any:
    """Rows ``rows`` (a slice or an index array) of a batch: an array, or a dict/tuple of
    them."""
    if isinstance(batch, dict):
        return {key: take_rows(value, rows) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(take_rows(value, rows) for value in batch)
    return np.asarray(batch)[rows]


def assemble_results(results: list[StepResult], out: Any = None) -> StepResult:
    """The actors' step results laid end to end (obs into ``out`` when given)."""
    obs = lay_rows([result[0] for result in results], out)
    rewards = np.concatenate([result[1] for result in results])
    terminations = np.concatenate([result[2] for result in results])
    truncations = np.concatenate([result[3] for result in results])
    sizes = [len(result[1]) for result in results]
    infos = merge_infos([result[4] for result in results], sizes)
    return obs, rewards, terminations, truncations, infos


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def ray_reason(exc: BaseException) -> str:
    """A one-paragraph reason from a Ray exception, without Ray's traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = _ANSI_ESCAPE.sub("", str(exc))  # Ray colours some names for terminals
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _blank_rows(sample: np.ndarray, rows: int) -> np.ndarray:
    if sample.dtype == object:
        return np.full(rows, None, dtype=object)
    return np.zeros((rows, *sample.shape[1:]), dtype=sample.dtype)


def merge_infos(parts: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Lay per-actor infos end to end, so row i of every array belongs to the i-th env of
    the batch. A key some actors lack (no episode ended there) gets blank rows: zeros,
    False masks, None objects."""
    keys: list[str] = []
    for part in parts:
        keys.extend(key for key in part if key not in keys)
    merged: dict[str, Any] = {}
    for key in keys:
        values = [part.get(key) for part in parts]
        sample = next(value for value in values if value is not None)
        if isinstance(sample, dict):
            merged[key] = merge_infos([value or {} for value in values], sizes)
            continue
        sample = np.asarray(sample)
        merged[key] = np.concatenate([
            _blank_rows(sample, rows) if value is None else np.asarray(value)
            for value, rows in zip(values, sizes)
        ])
    return merged


def release_actors(actors: list[Any]) -> None:
    """Close each actor's vector env (its workers exit, its block is freed), then kill
    the actor so Ray frees its CPUs. Module-level so ``weakref.finalize`` can run it."""
    if not actors:
        return
    if ray.is_initialized():
        closing = []
        for actor in actors:
            try:
                closing.append(actor.close.remote())
            except Exception:  # noqa: BLE001 - a dead actor cannot close; kill it below
                pass
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        remaining = closing
        while remaining and time.monotonic() < deadline:
            try:
                _, remaining = ray.wait(remaining, num_returns=len(remaining),
                                        timeout=max(deadline - time.monotonic(), 0.0))
            except Exception:  # noqa: BLE001
                break
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
    actors.clear()
