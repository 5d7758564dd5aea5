"""The generic worker process: steps several gymnasium envs into the shared block.

The counterpart of :mod:`shmenv.worker` for any gymnasium env, started by the same
:class:`shmenv.pool.WorkerPool` and speaking the same framing (:mod:`shmenv.protocol`). Per
step it gets one message (``OP_STEP``; the actions are already in the block) and sends one
back. Observations, rewards and flags go into the block; the reply is empty unless some env
returned a non-empty info (or, under ``SAME_STEP``, ended its episode). Infos of the same
plain numbers in every env go into the block's info columns and the reply is one byte
(:class:`shmenv.anyinfos.InfoColumns`); any other holds one pickle of only those envs'
infos, packed by :func:`shmenv.anyinfos.pack_infos`. Spaces that do not fit the block
travel pickled: the actions in the command, and every observation in the reply, one pickle
of ``(observations, packed infos or None)``.

Where the time goes (CartPole-v1, 32 envs per worker): ``env.step`` itself (~5-9 µs with
gymnasium's wrappers) is most of it; per env the loop adds ~0.4 µs (list stores of the
observation, reward, flags and info), then one numpy assignment per batch writes the
observations, rewards and flags. Nothing is pickled while infos are empty or steady, and
commands and replies go over the pipe's raw descriptor (:mod:`shmenv.anypipe`). A heavier
env (HalfCheetah-v5) spends most of its extra CPU in ``env.step`` itself, which runs slower
in a worker that sleeps between steps than in a free-running loop (docs/architecture.md,
"Where the time goes").
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any, cast

import numpy as np
from gymnasium import Env, Space
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space, iterate

from shmenv.affinity import pin_current_process
from shmenv.anyinfos import IN_BLOCK, InfoColumns, pack_infos
from shmenv.anypipe import WorkerPipe
from shmenv.anyrelay import OP_RELAYED_STEP, AnyRelay
from shmenv.anyspaces import BlockPlan, BlockViews, obs_writer, select, snapshot
from shmenv.block import BlockLayout, SharedBlock
from shmenv.protocol import (
    OP_CALL,
    OP_CLOSE,
    OP_RESET,
    OP_SET_ATTR,
    OP_STEP,
    OP_SYNC,
    ErrorReport,
    sync_marker,
)
from shmenv.spinwait import SpinWait

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Names call() may not reach: they have their own commands (as gymnasium refuses them).
RESERVED_CALLS = ("reset", "step", "close", "_setattr", "_check_spaces")


@dataclass(frozen=True)
class AnyWorkerSpec:
    """Everything a generic worker needs to start (picklable: env_fns are cloudpickled)."""

    index: int
    block_name: str
    layout: BlockLayout
    plan: BlockPlan
    env_start: int
    env_stop: int
    env_fns: tuple[Callable[[], Env], ...]
    autoreset_mode: AutoresetMode
    same_observation_space: bool = True  # "same": spaces must be equal, else shape+dtype
    cpu: int | None = None
    spin_us: float = 0.0
    # Relayed steps (shmenv.anyrelay): (worker index, first env, env stop) of each child's
    # subtree in the relay tree, in env order.
    relay_children: tuple[tuple[int, int, int], ...] = ()


def _check_spaces(env: Env, spec: AnyWorkerSpec, env_index: int) -> None:
    """gymnasium's rule: every env has the first env's spaces (RuntimeError otherwise)."""
    from gymnasium.spaces.utils import is_space_dtype_shape_equiv

    single_obs = spec.plan.observation_space
    same_obs = (env.observation_space == single_obs if spec.same_observation_space
                else is_space_dtype_shape_equiv(env.observation_space, single_obs))
    if not same_obs:
        if spec.same_observation_space:
            raise RuntimeError(
                "AsyncVectorEnv(..., observation_mode='same') however the sub-environments "
                f"observation spaces are not equivalent. env {env_index} has "
                f"{env.observation_space}, env 0 {single_obs}. If this is intentional, use "
                "`observation_mode='different'` instead.")
        raise RuntimeError(
            "AsyncVectorEnv(..., observation_mode='different' or custom space) however the "
            f"sub-environment's observation spaces do not share a common shape and dtype: "
            f"env {env_index} has {env.observation_space}, env 0 {single_obs}.")
    if env.action_space != spec.plan.action_space:
        raise RuntimeError(
            f"env {env_index} has the action space {env.action_space}, not "
            f"{spec.plan.action_space} as env 0: in order to batch actions, the action "
            "spaces of all envs must be equal.")


def run_any_worker(conn: Connection, spec: AnyWorkerSpec, fds_to_close: tuple[int, ...] = (),
                   child_conns: tuple[Connection, ...] = ()) -> None:
    """Entry point of a generic worker process (``WorkerPool(target=run_any_worker)``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the main process
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    for fd in fds_to_close:  # a forked child inherits its siblings' pipe ends; drop them
        try:
            os.close(fd)
        except OSError:
            pass
    block = None
    envs: list[Env] = []
    try:
        try:
            pin_current_process(spec.cpu)
            block = SharedBlock.attach(spec.block_name, spec.layout)
            assert block.extra is not None
            views = spec.plan.views(block.extra)
            for offset, env_fn in enumerate(spec.env_fns):
                if conn.poll(0):  # the main process died or is shutting down: stop now
                    conn.recv_bytes()
                    return
                env = env_fn()
                envs.append(env)
                _check_spaces(env, spec, spec.env_start + offset)
        except EOFError:
            raise
        except BaseException as exc:  # report start-up failures instead of dying silently
            conn.send(("error", ErrorReport.from_exception(exc, spec.index)))
            return
        conn.send(("ready", None))
        EnvRunner(spec, envs, views).serve(conn, AnyRelay(spec.index, spec.relay_children,
                                                          child_conns))
    except (EOFError, OSError):
        # The main process is gone: remove the block's name if it never could (see
        # shmenv.worker.run_worker and docs/reliability.md).
        SharedBlock.remove_name(spec.block_name)
    finally:
        for env in envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort on the way out
                pass
        if block is not None:
            block.close()


class _EnvFailed(Exception):
    """An env's own code raised: carries the report that names it."""

    def __init__(self, report: ErrorReport) -> None:
        super().__init__(report.message)
        self.report = report


class EnvRunner:
    """One worker's envs and the commands that run them; :meth:`serve` is the loop."""

    def __init__(self, spec: AnyWorkerSpec, envs: list[Env], views: BlockViews) -> None:
        start, stop = spec.env_start, spec.env_stop
        self.spec = spec
        self.envs = envs
        self.start = start
        plan = spec.plan
        count = stop - start
        self.batch_action_space = (None if views.actions is None
                                   else batch_space(plan.action_space, count))
        self.actions = None if views.actions is None else select(views.actions, start, stop)
        self.rewards = views.rewards[start:stop]
        self.terminated = views.terminated[start:stop]
        self.truncated = views.truncated[start:stop]
        self.obs_in_block = views.obs is not None
        # A step's observations: pickled from this list, or written into the block env by
        # env; a flat float batch takes them all from the list in one numpy assignment
        # (CartPole's 32: ~4.5 µs, where a write per env takes ~9.5).
        self.last_obs: list[Any] = [None] * count
        rows = select(views.obs, start, stop) if self.obs_in_block else None
        self.write_obs = (obs_writer(plan.observation_space, rows)
                          if self.obs_in_block else self.last_obs.__setitem__)
        self.obs_batch = (rows if isinstance(rows, np.ndarray) and rows.dtype.kind == "f"
                          else None)
        self.step_obs = (self.write_obs if self.obs_in_block and self.obs_batch is None
                         else self.last_obs.__setitem__)
        self.needs_reset = [False] * count  # NEXT_STEP: this env's next step only resets
        mode = spec.autoreset_mode
        self.next_step = mode == AutoresetMode.NEXT_STEP
        self.same_step = mode == AutoresetMode.SAME_STEP
        # Per-step scratch lists, written per env then copied into the block at once.
        self._rewards: list[Any] = [0.0] * count
        self._terminated: list[Any] = [False] * count
        self._truncated: list[Any] = [False] * count
        self._infos: list[dict[str, Any]] = [{}] * count
        self.info_columns = InfoColumns(views.infos, start, stop)

    # ------------------------------------------------------------------ the loop
    def serve(self, conn: Connection, relay: AnyRelay) -> None:
        """Answer commands until ``OP_CLOSE``, waiting for each with the Atari workers'
        spin-then-sleep rule (:class:`shmenv.spinwait.SpinWait`). A relayed step goes
        to the children first, so that they step their envs while this worker steps its
        own (see :mod:`shmenv.anyrelay`)."""
        waiter = SpinWait(self.spec.spin_us)
        pipe = WorkerPipe(conn)
        while True:
            waiter.wait(conn)
            message = pipe.receive()
            arrived = perf_counter()
            opcode = int.from_bytes(message[:4], "little")
            if opcode == OP_CLOSE:
                return
            if opcode != OP_STEP and opcode != OP_RELAYED_STEP:
                # After a reset or resynchronization the main may have dropped the reply
                # that told it the info columns' keys: tell them again.
                self.info_columns.told = False
            relayed = None
            if opcode == OP_RELAYED_STEP:
                relayed = relay.forward()
                opcode = OP_STEP
            try:
                if opcode == OP_STEP:
                    reply = self.step(message)
                elif opcode == OP_SYNC:
                    reply = sync_marker(message)
                elif opcode == OP_RESET:
                    reply = self.reset(*pickle.loads(message[4:]))
                elif opcode == OP_CALL:
                    reply = self.call(*pickle.loads(message[4:]))
                elif opcode == OP_SET_ATTR:
                    reply = self.set_attr(*pickle.loads(message[4:]))
                else:
                    raise ValueError(f"unknown opcode {opcode}")
            except _EnvFailed as failed:
                reply = failed.report.encode(0)
            except Exception as exc:
                reply = ErrorReport.from_exception(exc, self.spec.index).encode(0)
            if relayed is not None:
                reply = relay.collect(relayed, reply, waiter.spin_until(arrived))
            pipe.send(reply)
            waiter.replied(arrived)

    def _failed(self, exc: Exception, j: int) -> _EnvFailed:
        return _EnvFailed(ErrorReport.from_exception(exc, self.spec.index, self.start + j))

    # ------------------------------------------------------------------ step
    def step(self, message: bytes) -> bytes:
        """Step every env once; autoreset as gymnasium's vector envs do (see module doc)."""
        actions: Iterator[Any]
        if len(message) > 4:  # the actions came pickled (see ActionWriter)
            actions = iter(pickle.loads(message[4:]))
        else:
            actions = iterate(cast(Space, self.batch_action_space), snapshot(self.actions))
        write_obs, needs_reset = self.step_obs, self.needs_reset
        rewards, terminated, truncated = self._rewards, self._terminated, self._truncated
        next_step, same_step, start = self.next_step, self.same_step, self.start
        finals: list[tuple[int, Any, Any]] = []
        infos = self._infos
        reward: Any
        failed: list[ErrorReport] = []
        for j, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            try:
                if next_step and needs_reset[j]:
                    obs, info = env.reset()
                    reward, term, trunc = 0.0, False, False
                    needs_reset[j] = False
                else:
                    obs, reward, term, trunc, info = env.step(action)
                    if term or trunc:
                        if next_step:
                            needs_reset[j] = True
                        elif same_step:
                            finals.append((start + j, obs, info))
                            obs, info = env.reset()
                write_obs(j, obs)
                rewards[j] = reward
                terminated[j] = term
                truncated[j] = trunc
                infos[j] = info
            except Exception as exc:  # the other envs still step, as under gymnasium
                failed.append(ErrorReport.from_exception(exc, self.spec.index, start + j))
        if failed:
            raise _EnvFailed(ErrorReport.combine(failed))
        if self.obs_batch is not None:
            self._write_obs_batch()
        self.rewards[:] = rewards
        self.terminated[:] = terminated
        self.truncated[:] = truncated
        return self._reply(finals, infos, columns=True)

    def _write_obs_batch(self) -> None:
        """The step's observations into the block at once; if that fails, env by env, so
        that the error names every env whose observation does not fit."""
        try:
            self.obs_batch[:] = self.last_obs  # type: ignore[index]
        except Exception:
            failed = []
            for j, obs in enumerate(self.last_obs):
                try:
                    self.write_obs(j, obs)
                except Exception as exc:
                    failed.append(ErrorReport.from_exception(exc, self.spec.index,
                                                             self.start + j))
            if not failed:
                raise
            raise _EnvFailed(ErrorReport.combine(failed)) from None

    def _reply(self, finals: list[tuple[int, Any, Any]], infos: list[dict[str, Any]],
               columns: bool = False) -> bytes:
        """The reply (``infos``: every env's, in env order): empty when no env has an info;
        :data:`IN_BLOCK` when a step's infos are all in the block's info columns (and the
        main knows their keys); else one pickle of the packed infos (see
        shmenv.anyinfos) and, for observations that do not fit the block, every
        observation of this worker."""
        block_keys = None
        listed: list[tuple[int, dict[str, Any]]] = []
        skipped: list[int] = []
        unfit = None if not columns or not any(infos) else self.info_columns.write(infos)
        if unfit is None:  # no column fits (CartPole has no infos at all): list them
            listed = [(self.start + j, info) for j, info in enumerate(infos) if info]
        else:
            if not unfit and self.info_columns.told and not finals and self.obs_in_block:
                return IN_BLOCK
            block_keys, self.info_columns.told = self.info_columns.block_keys, True
            skipped = [self.start + j for j in unfit]
            listed = [(env, infos[env - self.start]) for env in skipped
                      if infos[env - self.start]]
        packed = (pack_infos(finals, listed, block_keys, skipped)
                  if finals or listed or block_keys else None)
        if not self.obs_in_block:
            return pickle.dumps((self.last_obs, packed), PICKLE_PROTOCOL)
        return b"" if packed is None else pickle.dumps(packed, PICKLE_PROTOCOL)

    # ------------------------------------------------------------------ other commands
    def reset(self, seeds: Sequence[int | None], options: dict[str, Any] | None,
              mask: Sequence[bool] | None) -> bytes:
        """Reset the envs ``mask`` selects (all if None); the others keep their state and
        observation, as gymnasium's ``reset_mask`` does."""
        infos: list[dict[str, Any]] = [{}] * len(self.envs)
        for j, env in enumerate(self.envs):
            if mask is not None and not mask[j]:
                continue
            try:
                obs, info = env.reset(seed=seeds[j], options=options)
                self.write_obs(j, obs)
            except Exception as exc:
                raise self._failed(exc, j) from None
            self.needs_reset[j] = False
            self.rewards[j] = 0.0  # what an async batch returns for a reset env
            self.terminated[j] = self.truncated[j] = False
            infos[j] = info
        return self._reply([], infos)

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Call (or read) ``name`` on every env, as gymnasium's ``call`` does."""
        results = []
        for j, env in enumerate(self.envs):
            try:
                attr = env.get_wrapper_attr(name)
                results.append(attr(*args, **kwargs) if callable(attr) else attr)
            except Exception as exc:
                raise self._failed(exc, j) from None
        return pickle.dumps(results, PICKLE_PROTOCOL)

    def set_attr(self, name: str, values: Sequence[Any]) -> bytes:
        for j, (env, value) in enumerate(zip(self.envs, values, strict=True)):
            try:
                env.set_wrapper_attr(name, value)
            except Exception as exc:
                raise self._failed(exc, j) from None
        return b""
