"""AsyncVectorEnv: gymnasium's AsyncVectorEnv for any env, on shmenv's workers and block.

Each worker process builds and steps several envs (:mod:`shmenv.anyworker`); their
observations, rewards and flags are written into one shared block laid out by gymnasium's
own helpers (:mod:`shmenv.anyspaces`), so a step is one small message each way per worker
and numpy copies in the main process. Infos of the same few numbers every step (MuJoCo's)
are columns in the block too; any other travel pickled, only those of the envs that
returned a non-empty one (:mod:`shmenv.anyinfos`).

Where the main's time goes per step (CartPole-v1 x 64 on 2 workers): checking and copying
the actions into the block, one write and one ``readv`` per worker, four small array
copies; no per-env Python unless some env returned an info.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from gymnasium import Env, Space
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import (
    batch_space,
    iterate,
)

from shmenv.anybatch import BatchMixin, ReadyBatches
from shmenv.anycalls import AsyncState, CallState, EnvCallsMixin, Replies, command_frame
from shmenv.anyoutputs import AnyOutputs, StepResult
from shmenv.anyrelay import OP_RELAYED_STEP, split_relayed
from shmenv.anyreset import ResetMixin
from shmenv.anyspaces import ActionWriter, BlockPlan, fits_block
from shmenv.anystart import (
    check_concurrency,
    check_shared_memory,
    check_unsupported,
    read_env_facts,
    start_workers,
)
from shmenv.errors import ClosedError
from shmenv.lifecycle import PoolOwnerMixin
from shmenv.planning import DEFAULT_RELAY_FANOUT, check_timeout
from shmenv.protocol import OP_STEP


# np_random(_seed) are per env (CallsMixin), as gymnasium's AsyncVectorEnv has them.
class AsyncVectorEnv(ResetMixin, BatchMixin, EnvCallsMixin, PoolOwnerMixin,  # type: ignore[misc]
                     VectorEnv):
    """gymnasium's ``AsyncVectorEnv`` for any env: ``env_fns`` run in ``num_workers``
    processes, several envs each, observations in one shared-memory block.

    Change one import (``from shmenv import AsyncVectorEnv``) and the rest of the code
    stays: the same constructor arguments, ``reset``/``step`` (and their ``*_async``/
    ``*_wait`` halves with ``timeout``), ``call``, ``get_attr``, ``set_attr``, ``render``,
    the three autoreset modes, ``reset(options={"reset_mask": ...})``, infos merged with
    the ``_key`` masks, and gymnasium's errors for misuse.

    Args:
        env_fns: functions that create the envs (cloudpickled, so lambdas work).
        shared_memory: observations through the block (True) or pickled (False, as
            gymnasium's ``shared_memory=False``). Spaces the block cannot hold (Text, OneOf)
            are pickled either way; a custom space with True raises gymnasium's
            ``ValueError``, and Graph/Sequence its ``TypeError``.
        copy: return copies of the observations (True) or the block's views, valid until
            the next ``step``/``reset``.
        context: multiprocessing start method ("fork", "spawn", "forkserver").
        daemon: the workers' daemon flag (False lets envs start processes of their own).
        worker: not supported (a custom worker function for gymnasium's one-env-per-process
            loop): anything but None raises ``ValueError``.
        observation_mode: "same", "different" (spaces of one shape and dtype but other
            bounds; every env is made once in this process to read its space, as gymnasium
            does) or a ``(observation_space, single_observation_space)`` tuple.
        autoreset_mode: ``NEXT_STEP`` (default, as gymnasium), ``SAME_STEP`` or ``DISABLED``.
        max_concurrency: at most this many envs run at once; shmenv's workers each step
            their envs one after another, so this caps ``num_workers``.
        num_workers: worker processes (default: one per core, at most one per env).
        cpu_affinity: True pins worker i to the i-th core this process may use; a list of
            core ids pins them round-robin over it.
        worker_spin_us: how long a worker polls for its next command before sleeping
            (default: 500 when every worker can have a core, else 0).
        timeout: seconds any call may wait for a worker (None: no limit); a worker that
            does not answer is killed and named in a ``WorkerTimeoutError``.
        relay_fanout: a synchronous step goes through a relay tree of the workers with up
            to this many children each, so the main writes one command and reads one reply
            whatever the number of workers (as ``shmenv.make``); 0: the main messages
            every worker itself. Only with 3 or more workers: at 2, relaying costs more CPU
            than the one message it saves (docs/architecture.md). Async batches and pickled
            actions address workers directly.

    Errors: an env that raises names its index, its worker and its traceback in a
    :class:`shmenv.WorkerError` (also an instance of the env's exception type when that is
    a builtin one, such as ``ValueError``); a dead worker raises
    :class:`shmenv.WorkerDiedError`. Either stops every worker and closes the env.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Env]],
        shared_memory: bool = True,
        copy: bool = True,
        context: str | None = None,
        daemon: bool = True,
        worker: Callable[..., None] | None = None,
        observation_mode: str | tuple[Space, Space] = "same",
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        max_concurrency: int | None = None,
        *,
        num_workers: int | None = None,
        batch_size: int | None = None,
        cpu_affinity: bool | Sequence[int] = False,
        worker_spin_us: float | None = None,
        timeout: float | None = None,
        relay_fanout: int = DEFAULT_RELAY_FANOUT,
    ) -> None:
        self._closed_reason: str | None = "it was never fully started"
        check_unsupported(worker, observation_mode)
        self.env_fns = env_fns
        self.shared_memory = shared_memory
        self.copy = copy
        self.context = context
        self.daemon = daemon
        self.worker = None
        self.observation_mode = observation_mode
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.max_concurrency = check_concurrency(max_concurrency)
        self.num_envs = len(env_fns)
        if not self.num_envs:
            raise ValueError("env_fns is empty: give at least one function that makes an env")
        self.timeout = check_timeout(timeout)

        facts = read_env_facts(env_fns, observation_mode)
        self.metadata = facts.metadata
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = facts.render_mode
        self.single_action_space = facts.action_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = facts.single_observation_space
        self.observation_space = facts.observation_space

        obs_in_block = shared_memory and fits_block(self.single_observation_space)
        if shared_memory and not obs_in_block:
            check_shared_memory(self.single_observation_space, self.num_envs)
        plan = BlockPlan.create(self.single_observation_space, self.single_action_space,
                                self.num_envs, obs_in_block)
        started = start_workers(
            self, env_fns, plan, autoreset_mode=self.autoreset_mode,
            same_spaces=observation_mode == "same", num_workers=num_workers,
            max_concurrency=self.max_concurrency, batch_size=batch_size,
            cpu_affinity=cpu_affinity, worker_spin_us=worker_spin_us, timeout=self.timeout,
            context=context, daemon=daemon, relay_fanout=relay_fanout)
        self._pool, self._block = started.pool, started.block
        self._finalizer = started.finalizer
        self._env_ranges, self._worker_cpus = started.ranges, started.cpus
        self.num_workers = len(started.ranges)
        self.batch_size = started.batch_size
        self.relayed = started.relayed
        assert self._block.extra is not None
        self._views = plan.views(self._block.extra)
        self._write_actions = (None if self._views.actions is None
                               else ActionWriter(self.single_action_space, self._views.actions))
        self._state = CallState()
        self._replies = Replies(self._pool)
        self._batches = ReadyBatches(self._pool, self._env_ranges, self.batch_size)
        self._outputs = AnyOutputs(self._views, self.single_observation_space,
                                   self._env_ranges, copy)
        self._step_frame = command_frame(OP_STEP)
        self._step_frames = [self._step_frame] * self.num_workers
        self._relayed_frame = command_frame(OP_RELAYED_STEP)
        self._silent = [b""] * self.num_workers  # a relayed reply from which none spoke
        self._step_relayed = False  # whether the pending step went through the relay
        self._closed_reason = None

    # ----------------------------------------------------------------- step
    def step(self, actions: Any, env_ids: Any = None) -> StepResult:
        """Step every env with its action; returns batched ``(obs, rewards, terminations,
        truncations, infos)`` as gymnasium's ``AsyncVectorEnv.step``. With ``env_ids``
        (async batches) it is ``send(actions, env_ids)`` then ``recv()``."""
        if env_ids is not None:
            self.send(actions, env_ids)
            return self.recv()
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Send every env its action and return at once (:meth:`step_wait` collects).

        Raises:
            ValueError, TypeError: an action of the wrong shape, type or range (the
                message names the env and the value); nothing was sent.
            AlreadyPendingCallError: another ``*_async`` call waits for its ``*_wait``.
            ClosedEnvironmentError: the env is closed.
        """
        self._check_open()
        self._state.check_idle("step_async")
        if self._batches.workers_in_flight:
            self._batches.check_idle("step_async(actions)")
        if self._write_actions is not None and self._write_actions(actions):
            if self.relayed:  # one write to worker 0 (see shmenv.anyrelay)
                self._pool.resynchronize()
                self._pool.send_relayed(self._relayed_frame)
                self._state.begin(AsyncState.WAITING_STEP)
                self._step_relayed = True
                return
            frames = self._step_frames
        else:  # pickled, each worker its slice, each env exactly what iterate gives
            items = list(iterate(self.action_space, actions))
            if len(items) != self.num_envs:
                raise ValueError(f"got {len(items)} actions for {self.num_envs} envs")
            frames = [command_frame(OP_STEP, pickle.dumps(items[start:stop]))
                      for start, stop in self._env_ranges]
        self._replies.send(frames)
        self._state.begin(AsyncState.WAITING_STEP)
        self._step_relayed = False

    def step_wait(self, timeout: float | None = None) -> StepResult:
        """The results of the pending :meth:`step_async`.

        Raises:
            NoAsyncCallError: no ``step_async`` is pending.
            WorkerTimeoutError: no answer within ``timeout`` seconds (also
                ``multiprocessing.TimeoutError``); the env is closed.
        """
        self._check_open()
        self._state.end(AsyncState.WAITING_STEP)
        if self._step_relayed:
            reply = self._replies.read(timeout, "in a step", (0,))[0]
            self._pool.unread_replies = False
            payloads = split_relayed(reply, self.num_workers) if reply else self._silent
        else:
            payloads = self._replies.read(timeout, "in a step")
        return self._outputs.step_result(payloads)

    # ----------------------------------------------------------------- lifecycle
    def _check_open(self) -> None:
        if self._closed_reason is not None:
            self._pool.check_process("this AsyncVectorEnv")  # ForkedEnvError in a child
            raise ClosedError(f"Trying to operate on `AsyncVectorEnv` after it was closed "
                              f"({self._closed_reason}).")

    def close(self, **kwargs: Any) -> None:
        """Stop the workers and release the block (safe to call more than once)."""
        state = getattr(self, "_state", None)
        if state is not None and self._closed_reason is None:
            state.warn_if_pending()
        super().close(**kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Refuse to pickle: the workers, pipes and block belong to this process."""
        raise TypeError("a shmenv.AsyncVectorEnv cannot be pickled: it owns worker processes "
                        "and shared memory of this process. Send the other process the env "
                        "functions and create the AsyncVectorEnv there.")

    def __repr__(self) -> str:
        workers = getattr(self, "num_workers", None)
        return f"shmenv.AsyncVectorEnv(num_envs={self.num_envs}, num_workers={workers})"
