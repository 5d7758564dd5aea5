"""AsyncVectorEnv: gymnasium's AsyncVectorEnv for any env, on shmenv's workers and block.

Each worker process builds and steps several envs (:mod:`shmenv.anyworker`); their
observations, rewards and flags are written into one shared block laid out by gymnasium's
own helpers (:mod:`shmenv.anyspaces`), so a step is one small message each way per worker
and numpy copies in the main process. Infos travel pickled, and only those of the envs
that returned a non-empty one.

Where the main's time goes per step (CartPole-v1 x 64 on 2 workers): checking and copying
the actions into the block, one write and one ``readv`` per worker, four small array
copies; no per-env Python unless some env returned an info.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import Env, Space, logger
from gymnasium.error import CustomSpaceError
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import (
    CloudpickleWrapper,
    batch_space,
    clear_mpi_env_vars,
    concatenate,
    create_empty_array,
    create_shared_memory,
    iterate,
)

from shmenv.affinity import worker_cpus
from shmenv.anycalls import AsyncState, CallState, Replies, command_frame
from shmenv.anyspaces import ActionWriter, BlockPlan, RegionContext, fits_block
from shmenv.anyworker import RESERVED_CALLS, AnyWorkerSpec, run_any_worker
from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.planning import check_timeout, env_seeds, plan_workers, spin_budget, split_envs
from shmenv.pool import FailureNotes, WorkerPool, release
from shmenv.protocol import OP_CALL, OP_RESET, OP_SET_ATTR, OP_STEP

_NOTES = FailureNotes(
    died=". All workers were stopped and this env is closed; create a new one.",
    closed_while_waiting=("this AsyncVectorEnv was closed ({reason}) while this call "
                          "waited for its workers; create a new one"))


class AsyncVectorEnv(ClosableEnvMixin, VectorEnv):
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
        observation_mode: "same", or a ``(observation_space, single_observation_space)``
            tuple; "different" is not supported (``ValueError``).
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
        cpu_affinity: bool | Sequence[int] = False,
        worker_spin_us: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self._closed_reason: str | None = "it was never fully started"
        if worker is not None:
            raise ValueError(
                "shmenv.AsyncVectorEnv runs its own worker loop (several envs per process, "
                "observations in shared memory), so it cannot take a custom `worker` "
                "function; use gymnasium.vector.AsyncVectorEnv for that.")
        if isinstance(observation_mode, str) and observation_mode != "same":
            raise ValueError(
                f"shmenv.AsyncVectorEnv supports observation_mode='same' or a tuple "
                f"(observation_space, single_observation_space), not {observation_mode!r}; "
                "for envs whose observation spaces differ in their bounds pass that tuple.")
        self.env_fns = env_fns
        self.shared_memory = shared_memory
        self.copy = copy
        self.context = context
        self.daemon = daemon
        self.worker = None
        self.observation_mode = observation_mode
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.max_concurrency = _check_concurrency(max_concurrency)
        self.num_envs = len(env_fns)
        if not self.num_envs:
            raise ValueError("env_fns is empty: give at least one function that makes an env")
        self.timeout = check_timeout(timeout)

        # As gymnasium does: one env made here tells the spaces and the metadata.
        dummy = env_fns[0]()
        self.metadata = dict(dummy.metadata)
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = dummy.render_mode
        self.single_action_space = dummy.action_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        if isinstance(observation_mode, tuple):
            if len(observation_mode) != 2 or not all(isinstance(s, Space)
                                                     for s in observation_mode):
                raise TypeError("observation_mode must be 'same' or a tuple of two Spaces "
                                f"(observation_space, single_observation_space), got "
                                f"{observation_mode!r}")
            self.observation_space, self.single_observation_space = observation_mode
        else:
            self.single_observation_space = dummy.observation_space
            self.observation_space = batch_space(self.single_observation_space,
                                                 self.num_envs)
        dummy.close()
        del dummy

        obs_in_block = shared_memory and fits_block(self.single_observation_space)
        if shared_memory and not obs_in_block:
            _check_shared_memory(self.single_observation_space, self.num_envs)
        plan = BlockPlan.create(self.single_observation_space, self.single_action_space,
                                self.num_envs, obs_in_block)
        self._start_workers(plan, num_workers, cpu_affinity, worker_spin_us)
        assert self._block.extra is not None
        self._views = plan.views(self._block.extra)
        self._write_actions = (None if self._views.actions is None
                               else ActionWriter(self.single_action_space, self._views.actions))
        self._state = CallState()
        self._step_frames = [command_frame(OP_STEP)] * self.num_workers
        self._obs_in_block = obs_in_block
        self._obs_buffer = (None if obs_in_block else create_empty_array(
            self.single_observation_space, n=self.num_envs, fn=np.zeros))
        self._closed_reason = None

    def _start_workers(self, plan: BlockPlan, num_workers: int | None,
                       cpu_affinity: bool | Sequence[int], spin_us: float | None) -> None:
        """Create the block, start the workers (each builds its envs) and wait for them."""
        cap = self.max_concurrency or self.num_envs
        if num_workers is None:
            num_workers = min(multiprocessing.cpu_count(), self.num_envs, cap)
        elif num_workers > cap:
            raise ValueError(f"num_workers={num_workers} exceeds max_concurrency={cap}: "
                             "each worker runs one env at a time")
        self.num_workers = plan_workers(self.num_envs, self.num_envs, num_workers, 1)
        self._env_ranges = split_envs(self.num_envs, self.num_workers)
        self._worker_cpus = worker_cpus(cpu_affinity, self.num_workers)
        spin = spin_budget(spin_us, self.num_workers)
        self._block = SharedBlock.create(BlockLayout(self.num_envs, (0, 0, 0),
                                                     extra_bytes=plan.nbytes))
        fns = [CloudpickleWrapper(fn) for fn in self.env_fns]
        same = not isinstance(self.observation_mode, tuple)
        specs = [AnyWorkerSpec(index, self._block.name, self._block.layout, plan, start, stop,
                               tuple(fns[start:stop]), self.autoreset_mode, same,
                               self._worker_cpus[index], spin)
                 for index, (start, stop) in enumerate(self._env_ranges)]
        self._pool = WorkerPool(specs, notes=_NOTES, on_failure=self._shutdown,
                                timeout=self.timeout, target=run_any_worker,
                                daemon=self.daemon)
        self._pool.set_on_fork(self._forked)
        self._finalizer = self._pool.finalize(self, _release, self._pool.conns,
                                              self._pool.processes, self._block)
        try:
            with clear_mpi_env_vars():
                self._pool.start(self.context)
        except BaseException:
            self._finalizer()
            raise
        self._block.unlink()  # every worker mapped it: from now on nothing can leak
        self._replies = Replies(self._pool)

    # ----------------------------------------------------------------- step
    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        """Step every env with its action; returns batched ``(obs, rewards, terminations,
        truncations, infos)`` as gymnasium's ``AsyncVectorEnv.step``."""
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
        if self._write_actions is not None:
            self._write_actions(actions)
            frames = self._step_frames
        else:  # actions the block cannot hold: pickled, each worker its own slice
            items = list(iterate(self.action_space, actions))
            if len(items) != self.num_envs:
                raise ValueError(f"got {len(items)} actions for {self.num_envs} envs")
            frames = [command_frame(OP_STEP, pickle.dumps(items[start:stop]))
                      for start, stop in self._env_ranges]
        self._replies.send(frames)
        self._state.begin(AsyncState.WAITING_STEP)

    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray,
                                                               np.ndarray, dict[str, Any]]:
        """The results of the pending :meth:`step_async`.

        Raises:
            NoAsyncCallError: no ``step_async`` is pending.
            WorkerTimeoutError: no answer within ``timeout`` seconds (also
                ``multiprocessing.TimeoutError``); the env is closed.
        """
        self._check_open()
        self._state.end(AsyncState.WAITING_STEP)
        payloads = self._replies.read(timeout, "in a step")
        views = self._views
        rewards = views.rewards.copy()
        terminations = views.terminated.copy()
        truncations = views.truncated.copy()
        obs, infos = self._results(payloads)
        return obs, rewards, terminations, truncations, infos

    def _results(self, payloads: list[bytes]) -> tuple[Any, dict[str, Any]]:
        """Observations and merged infos from the workers' replies (see shmenv.anyworker):
        gymnasium's ``_add_info`` for each env that sent an info, in env order."""
        infos: dict[str, Any] = {}
        if self._obs_in_block:
            obs = self._views.obs
            if self.copy:
                obs = obs.copy() if isinstance(obs, np.ndarray) else deepcopy(obs)
            for payload in payloads:
                if payload:
                    infos = self._merge(infos, pickle.loads(payload))
            return obs, infos
        every_obs: list[Any] = []
        for payload in payloads:
            worker_obs, records = pickle.loads(payload)
            every_obs.extend(worker_obs)
            infos = self._merge(infos, records)
        # A custom space has no buffer (None): concatenate returns a tuple for it.
        self._obs_buffer = concatenate(self.single_observation_space, every_obs,
                                       self._obs_buffer)  # type: ignore[arg-type]
        return (deepcopy(self._obs_buffer) if self.copy else self._obs_buffer), infos

    def _merge(self, infos: dict[str, Any], records: list[tuple[Any, ...]]) -> dict[str, Any]:
        for record in records:
            if len(record) == 4:  # SAME_STEP: the episode ended, then the env was reset
                env, info, final_obs, final_info = record
                infos = self._add_info(infos, {"final_obs": final_obs,
                                               "final_info": final_info}, env)
            else:
                env, info = record
            infos = self._add_info(infos, info, env)
        return infos

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (or those ``options["reset_mask"]`` selects); ``seed``: an int
        seeds env i with ``seed + i``, a list gives each env its own."""
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(self, seed: int | Sequence[int | None] | None = None,
                    options: dict[str, Any] | None = None) -> None:
        """Send every env its reset and return at once (:meth:`reset_wait` collects).
        ``options`` go to every env's ``reset`` except ``"reset_mask"``, a bool array of
        shape ``(num_envs,)`` choosing which envs reset (the others keep their state)."""
        self._check_open()
        seeds = env_seeds(seed, self.num_envs)
        self._state.check_idle("reset_async")
        mask = None
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = _check_reset_mask(options.pop("reset_mask"), self.num_envs)
        frames = [command_frame(OP_RESET, pickle.dumps(
            (seeds[start:stop], options, None if mask is None else mask[start:stop])))
            for start, stop in self._env_ranges]
        self._replies.send(frames)
        self._state.begin(AsyncState.WAITING_RESET)

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """The ``(obs, infos)`` of the pending :meth:`reset_async` (errors as
        :meth:`step_wait`)."""
        self._check_open()
        self._state.end(AsyncState.WAITING_RESET)
        return self._results(self._replies.read(timeout, "in a reset"))

    # ----------------------------------------------------------------- calls
    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call the method ``name`` of every env (or read the attribute) and return the
        results in env order."""
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Start :meth:`call` and return at once (:meth:`call_wait` collects).

        Raises:
            ValueError: ``name`` is reset, step or close (call those directly).
            AlreadyPendingCallError: another ``*_async`` call waits for its ``*_wait``.
        """
        self._check_open()
        self._state.check_idle("call_async")
        if name in RESERVED_CALLS:
            raise ValueError(f"Trying to call function `{name}` with `call`, use `{name}` "
                             "directly instead.")
        frame = command_frame(OP_CALL, pickle.dumps((name, args, kwargs)))
        self._replies.send([frame] * self.num_workers)
        self._state.begin(AsyncState.WAITING_CALL)

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """The results of the pending :meth:`call_async`, in env order (errors as
        :meth:`step_wait`)."""
        self._check_open()
        self._state.end(AsyncState.WAITING_CALL)
        return tuple(self._replies.read_objects(timeout, "in a call"))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The attribute ``name`` of every env."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set ``name`` in every env: a list or tuple gives one value per env, anything
        else is set in all of them."""
        self._check_open()
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError("Values must be a list or tuple with length equal to the number "
                             f"of environments. Got `{len(values)}` values for "
                             f"{self.num_envs} environments.")
        self._state.check_idle("set_attr")
        self._replies.send([command_frame(OP_SET_ATTR, pickle.dumps((name, values[a:b])))
                            for a, b in self._env_ranges])
        self._replies.read(None, "in set_attr")

    def render(self) -> tuple[Any, ...] | None:
        """Every env's ``render()``."""
        return self.call("render")

    # Per env, as gymnasium's AsyncVectorEnv (VectorEnv declares one value).
    @property  # type: ignore[misc]
    def np_random_seed(self) -> tuple[int, ...]:  # type: ignore[override]
        """Every env's ``np_random_seed``."""
        return self.get_attr("np_random_seed")

    @property  # type: ignore[misc]
    def np_random(self) -> tuple[np.random.Generator, ...]:  # type: ignore[override]
        """Every env's random generator (copies: the envs' own live in the workers)."""
        return self.get_attr("np_random")

    # ----------------------------------------------------------------- lifecycle
    def _check_open(self) -> None:
        if self._closed_reason is not None:
            self._pool.check_process("this AsyncVectorEnv")  # ForkedEnvError in a child
            raise ClosedError(f"Trying to operate on `AsyncVectorEnv` after it was closed "
                              f"({self._closed_reason}).")

    def close(self, **kwargs: Any) -> None:
        """Stop the workers and release the block (safe to call more than once)."""
        state = getattr(self, "_state", None)
        if state is not None and state.pending and self._closed_reason is None:
            logger.warn(f"Calling `close` while waiting for a pending call to "
                        f"`{state.state.value}` to complete.")
        super().close(**kwargs)

    def _before_release(self, reason: str) -> None:
        self._pool.closing = reason  # a call waiting in another thread: ClosedError

    def _forked(self) -> None:
        self._closed_reason = "it belongs to another process"

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The worker processes' pids, in worker order."""
        return tuple(int(process.pid or 0) for process in self._pool.processes)

    @property
    def worker_env_ranges(self) -> tuple[tuple[int, int], ...]:
        """Each worker's envs as ``(start, stop)``, in worker order."""
        return tuple(self._env_ranges)

    @property
    def worker_cpus(self) -> tuple[int | None, ...]:
        """The core each worker is pinned to (None: unpinned)."""
        return tuple(self._worker_cpus)

    def __repr__(self) -> str:
        workers = getattr(self, "num_workers", None)
        return f"shmenv.AsyncVectorEnv(num_envs={self.num_envs}, num_workers={workers})"


def _check_concurrency(max_concurrency: int | None) -> int | None:
    """gymnasium's checks of ``max_concurrency`` (with its messages)."""
    if max_concurrency is None:
        return None
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, (int, np.integer)):
        raise ValueError(f"`max_concurrency` must be an integer or None, got "
                         f"{type(max_concurrency)}.")
    if max_concurrency < 1:
        raise ValueError(f"`max_concurrency` must be a positive or None, got {max_concurrency}.")
    return int(max_concurrency)


def _check_shared_memory(space: Space, num_envs: int) -> None:
    """gymnasium's errors for a space its shared memory cannot lay out: ValueError for a
    custom space, TypeError for one with a dynamic shape (Graph, Sequence)."""
    try:
        create_shared_memory(space, num_envs, ctx=RegionContext())  # type: ignore[arg-type]
    except CustomSpaceError as exc:
        raise ValueError(
            f"Using `AsyncVectorEnv(..., shared_memory=True)` caused an error: {exc} "
            "Pass shared_memory=False to send this space's observations pickled.") from exc


def _check_reset_mask(mask: Any, num_envs: int) -> list[bool]:
    """gymnasium's checks of ``options["reset_mask"]`` (with its error types)."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, "
                         f"got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not mask.any():
        raise ValueError("`options['reset_mask']` must contain a boolean array with at least "
                         f"one True value, got reset_mask={mask}")
    return mask.tolist()


def _release(conns: list, processes: list, block: SharedBlock) -> None:
    """Stop the workers and release the block (module level, for ``weakref.finalize``)."""
    release(conns, processes)
    block.close()
