"""Measurement plumbing shared by every benchmark.

Each measurement runs in a fresh Python subprocess (``python -m shmenv.benchmarks.harness``)
so that one contender's processes, threads, caches and imports cannot slow the next. Inside
that subprocess:

* ``cpu_us_per_step`` is the main process's CPU time (``resource.getrusage``, user +
  system, all its threads) over the timed window, divided by the env-steps done in it;
* ``main_thread_cpu_us_per_step`` is the same for the stepping thread alone (differs only
  for contenders that emulate in threads of the main process: envpool, ale_py's vector env);
* ``total_cpu_us_per_step`` is the CPU time of the subprocess and all its descendants
  together per env-step: the whole cost of an env-step, which (unlike steps/s) barely
  depends on what else the machine is running;
* the memory sampler's own CPU time is subtracted from both;
* ``peak_memory_bytes`` is the largest sum of RSS over the subprocess and all its
  descendants, sampled every 0.1 s (shared pages count once per process that maps them).
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SAMPLE_INTERVAL_S = 0.2


@dataclass
class Measurement:
    """One timed window of one contender."""

    env_steps: int
    seconds: float
    cpu_seconds: float
    main_thread_cpu_seconds: float
    total_cpu_seconds: float
    peak_memory_bytes: int

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.seconds

    def as_dict(self) -> dict[str, float]:
        steps = max(self.env_steps, 1)
        return {
            **asdict(self),
            "steps_per_s": self.steps_per_s,
            "cpu_us_per_step": 1e6 * self.cpu_seconds / steps,
            "main_thread_cpu_us_per_step": 1e6 * self.main_thread_cpu_seconds / steps,
            "total_cpu_us_per_step": 1e6 * self.total_cpu_seconds / steps,
        }


class MemorySampler:
    """Samples the RSS sum of this process and its descendants in a background thread,
    and reads their CPU times (:meth:`cpu_seconds`) net of the sampler's own."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._psutil = psutil
        self._root = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.own_cpu_seconds = 0.0  # the sampler thread's CPU time, kept out of the figures
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _tree(self) -> list:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except self._psutil.NoSuchProcess:
            return [self._root]

    def sample(self) -> int:
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def tree_cpu_seconds(self) -> float:
        """User + system CPU of this process and its live descendants, minus the sampler."""
        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            total += times.user + times.system
        return total - self.own_cpu_seconds

    def main_cpu_seconds(self) -> float:
        """This process's CPU (all threads), minus the sampler thread."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime - self.own_cpu_seconds

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            start = time.thread_time()
            self.sample()
            self.own_cpu_seconds += time.thread_time() - start

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def time_step_loop(step: Callable[[], None], envs_per_call: int, warmup_s: float,
                   seconds: float, sampler: MemorySampler) -> Measurement:
    """Call ``step`` for ``warmup_s`` untimed, then for ``seconds`` timed."""
    deadline = time.perf_counter() + warmup_s
    while time.perf_counter() < deadline:
        step()
    cpu0, thread0 = sampler.main_cpu_seconds(), time.thread_time()
    tree0 = sampler.tree_cpu_seconds()
    start = time.perf_counter()
    deadline = start + seconds
    calls = 0
    while True:
        step()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    cpu1, thread1 = sampler.main_cpu_seconds(), time.thread_time()
    tree1 = sampler.tree_cpu_seconds()
    return Measurement(calls * envs_per_call, now - start, cpu1 - cpu0, thread1 - thread0,
                       tree1 - tree0, sampler.peak_bytes)


def time_free_running(target: Callable[..., None], args: Sequence[tuple], warmup: float,
                      seconds: float, ready_timeout: float = 300.0) -> Measurement:
    """Time processes that step on their own, with no main-process coordination (a
    ceiling): process i runs ``target(*args[i], counters, ready, stop, i)``, sets
    ``ready[i]`` once built, then keeps ``counters[i]`` at its env-steps done until
    ``stop.value`` is set. The window's env-steps are read from the counters; the processes
    are always stopped and reaped."""
    ctx = multiprocessing.get_context()
    counters = ctx.RawArray("q", len(args))
    ready = ctx.RawArray("b", len(args))
    stop = ctx.RawValue("b", 0)
    procs = [ctx.Process(target=target, args=(*a, counters, ready, stop, i), daemon=True)
             for i, a in enumerate(args)]
    with MemorySampler() as sampler:
        for p in procs:
            p.start()
        try:
            deadline = time.monotonic() + ready_timeout
            while not all(ready):
                if time.monotonic() > deadline or not all(p.is_alive() for p in procs):
                    raise RuntimeError("a free-running process failed to start")
                time.sleep(0.01)
            time.sleep(warmup)
            cpu0, thread0 = sampler.main_cpu_seconds(), time.thread_time()
            tree0 = sampler.tree_cpu_seconds()
            steps0, start = sum(counters), time.perf_counter()
            time.sleep(seconds)
            steps1, end = sum(counters), time.perf_counter()
            cpu1, thread1 = sampler.main_cpu_seconds(), time.thread_time()
            tree1 = sampler.tree_cpu_seconds()
        finally:
            stop.value = 1
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
    return Measurement(steps1 - steps0, end - start, cpu1 - cpu0, thread1 - thread0,
                       tree1 - tree0, sampler.peak_bytes)


def run_free(step_row: Callable[[Any], None], actions: Any, envs_per_row: int,
             counters: Any, ready: Any, stop: Any, index: int) -> None:
    """The loop of a process under :func:`time_free_running`, once its envs are built:
    ``step_row`` each row of ``actions`` in turn (cycling) until ``stop`` is set, keeping
    ``counters[index]`` at the env-steps done."""
    ready[index] = 1
    rows = len(actions)
    t = 0
    done_steps = 0
    while not stop.value:
        step_row(actions[t % rows])
        done_steps += envs_per_row
        counters[index] = done_steps
        t += 1


def action_stream(seed: int, num_envs: int, num_actions: int, rows: int = 4096) -> np.ndarray:
    """The seeded random actions every contender replays, cycling: (rows, num_envs) int32."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_actions, size=(rows, num_envs), dtype=np.int32)


class ActionCycle:
    """Hands out the rows of an action stream in order, wrapping around."""

    def __init__(self, actions: np.ndarray) -> None:
        self._actions = actions
        self._index = 0

    def next(self) -> np.ndarray:
        row = self._actions[self._index]
        self._index = (self._index + 1) % len(self._actions)
        return row


def step_function(env: Any, cycle: ActionCycle, async_ids: Any = None) -> Callable[[], None]:
    """One timed step of ``env`` with the cycle's next actions: ``step`` for a synchronous
    env; for async batches (``async_ids``: the env ids its reset returned) ``send`` to the
    ids the last ``recv`` returned, then ``recv``."""
    if async_ids is None:
        def step() -> None:
            env.step(cycle.next())
        return step
    ready = {"ids": async_ids}

    def async_step() -> None:
        env.send(cycle.next(), ready["ids"])
        ready["ids"] = env.recv()[-1]["env_id"]
    return async_step


class SubprocessError(RuntimeError):
    """A measurement subprocess failed; the message carries its stderr tail."""


def run_isolated(target: str, params: dict[str, Any], timeout: float = 600.0) -> dict:
    """Run ``target`` ("module:function", called with ``**params``, returning a JSON-able
    dict) in a fresh Python subprocess and return its result."""
    with tempfile.TemporaryDirectory(prefix="shmenv-bench-") as tmp:
        out_path = os.path.join(tmp, "result.json")
        payload = json.dumps({"target": target, "params": params, "out": out_path})
        proc = subprocess.run(
            [sys.executable, "-m", "shmenv.benchmarks.harness", payload],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=timeout, text=True,
        )
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
            raise SubprocessError(f"{target} exited with code {proc.returncode}: {tail}")
        with open(out_path) as f:
            return json.load(f)


@dataclass(frozen=True)
class Job:
    """One measurement a suite repeats each round: ``target`` called with ``params`` in a
    fresh subprocess; ``key`` files its results, ``label`` names it on the progress bar."""

    key: Any
    label: str
    target: str
    params: dict[str, Any]


@dataclass
class Rounds:
    """What :func:`run_rounds` measured: each job's results, one per round it completed,
    and the error of each job that failed (it is not run again after a failure)."""

    results: dict[Any, list[dict]]
    failures: dict[Any, str]


def run_rounds(jobs: Sequence[Job], rounds: int, show_progress: bool = True,
               title: str = "bench") -> Rounds:
    """Run every job once per round, rounds interleaved (A B C, A B C, ...) so that a noisy
    neighbour hurts every job alike, each in its own subprocess; a live progress bar on
    stderr unless ``show_progress`` is false. The one rounds loop of every suite."""
    from shmenv.benchmarks import report

    results: dict[Any, list[dict]] = {job.key: [] for job in jobs}
    failures: dict[Any, str] = {}
    bar = report.progress() if show_progress else None
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task(title, total=rounds * len(jobs))
    try:
        for r in range(rounds):
            for job in jobs:
                if bar is not None:
                    bar.update(task, description=f"{title}: round {r + 1}/{rounds}, {job.label}")
                if job.key not in failures:
                    try:
                        results[job.key].append(run_isolated(job.target, job.params))
                    except SubprocessError as exc:
                        failures[job.key] = str(exc)
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return Rounds(results, failures)


def _child_main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    module_name, function_name = spec["target"].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**spec["params"])
    with open(spec["out"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
