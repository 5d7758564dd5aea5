"""Failure scenarios run in a child process by tests/test_reliability.py.

``python tests/reliability_child.py SCENARIO [options]`` runs one scenario and prints one
JSON object per line (``{"event": ..., ...}``) for the test to check; the test also checks
this process's stderr (which workers and the resource tracker share) and /dev/shm.
Scenarios that kill or signal processes live here so that the test process is never hit.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
from procs import all_gone, pid_alive  # this script's own directory is on sys.path

import shmenv
from shmenv.block import NAME_PREFIX, SHM_DIR
from shmenv.fakegames import NUM_ACTIONS, CounterGame


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def own_segments() -> list[str]:
    prefix = f"{NAME_PREFIX}{os.getpid()}_"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def error_fields(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc),
            "exitcode": getattr(exc, "exitcode", None)}


def expect_closed(call) -> dict:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return error_fields(exc)
    return {"type": None, "message": ""}


def make_env(args, **game_kwargs) -> shmenv.ShmVectorEnv:
    return shmenv.make("Breakout", args.num_envs, num_workers=args.num_workers,
                       context=args.context, relay_fanout=args.relay_fanout,
                       game_factory=functools.partial(CounterGame, **game_kwargs))


# --------------------------------------------------------------------------- scenarios
def worker_killed(args) -> None:
    """SIGKILL one worker while the main process waits in step/reset, or while idle."""
    delay = 0.3 if args.when in ("step", "reset") else 0.0
    if args.api == "compat":
        workers = [shmenv.Worker(10 + i, game_factory=functools.partial(
            CounterGame, step_delay_s=delay)) for i in range(2)]
        for w in workers:
            w.child.send(("reset", None))
            w.child.recv()
        victim = workers[1].process.pid
        pids = [w.process.pid for w in workers]
    else:
        env = make_env(args, step_delay_s=delay if args.when == "step" else 0.0,
                       reset_delay_s=delay if args.when == "reset" else 0.0)
        env.reset()
        victim = env.worker_pids[args.victim]
        pids = list(env.worker_pids)
    emit("ready", workers=pids, victim=victim)

    killed_at = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)

    if args.when == "idle":
        kill()
        all_gone([victim])
    else:
        threading.Timer(0.15, kill).start()
    actions = np.ones(args.num_envs, dtype=np.int64)
    try:
        if args.api == "compat":
            workers[1].child.send(("step", 1))
            workers[1].child.recv()
        elif args.when == "reset":
            env.reset()
        else:
            env.step(actions)
    except Exception as exc:  # noqa: BLE001
        emit("error", seconds=time.monotonic() - killed_at[0], **error_fields(exc))
    else:
        emit("error", type=None)
    if args.api == "compat":
        later = expect_closed(lambda: workers[1].child.send(("step", 0)))
        for w in workers:
            w.child.send(("close", None))
        alive = [p for p in pids if psutil_alive(p)]
    else:
        later = expect_closed(lambda: env.step(actions))
        emit("later_reset", **expect_closed(env.reset))
        env.close()
        alive = [pid for pid in env.worker_pids if pid_alive(pid)]
    emit("later", **later)
    emit("end", alive=alive, segments=own_segments())


def psutil_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def worker_exception(args) -> None:
    """A game that fails to load (start) or raises in the middle of a run (step)."""
    knobs = {"fail_on_start": True} if args.phase == "start" else {"fail_at_step": 3}
    try:
        if args.api == "compat":
            worker = shmenv.Worker(5, game_factory=functools.partial(CounterGame, **knobs))
            pids = [worker.process.pid]
            worker.child.send(("reset", None))
            worker.child.recv()
            for _ in range(5):
                worker.child.send(("step", 1))
                worker.child.recv()
        else:
            env = make_env(args, **knobs)
            pids = list(env.worker_pids)
            env.reset()
            for _ in range(5):
                env.step(np.zeros(args.num_envs, dtype=np.int64))
    except Exception as exc:  # noqa: BLE001
        emit("error", worker_type=getattr(exc, "worker_type", None),
             worker_traceback=getattr(exc, "worker_traceback", None), **error_fields(exc))
    if args.api == "compat":
        emit("later", **expect_closed(lambda: worker.child.send(("step", 0))))
    elif args.phase == "step":
        emit("later", **expect_closed(env.reset))
        pids = list(env.worker_pids)
    else:
        import psutil

        pids = [c.pid for c in psutil.Process().children()
                if "resource_tracker" not in " ".join(c.cmdline())]
    time.sleep(0.2)
    emit("end", alive=[p for p in pids if psutil_alive(p)], segments=own_segments())


def parent_sigkill(args) -> None:
    """Run until the test SIGKILLs this process. ``--phase startup``: workers take a second
    to start, so the kill lands before the block's name was unlinked."""
    if args.api == "compat":
        workers = [shmenv.Worker(i, game_factory=functools.partial(CounterGame))
                   for i in range(3)]
        if args.phase == "running":
            for w in workers:
                w.child.send(("reset", None))
                w.child.recv()
        emit("ready", workers=[w.process.pid for w in workers])
        time.sleep(60)
        return
    start_delay = 0.5 if args.phase == "startup" else 0.0
    env = make_env(args, start_delay_s=start_delay)
    env.reset()
    emit("ready", workers=list(env.worker_pids))
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        env.step(rng.integers(0, NUM_ACTIONS, args.num_envs))


def ctrl_c(args) -> None:
    """One Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while step
    waits for a slow worker; then the env must still work and close cleanly."""
    env = make_env(args, step_delay_s=0.3)
    env.reset()
    emit("ready", workers=list(env.worker_pids))
    try:
        env.step(np.ones(args.num_envs, dtype=np.int64))
    except KeyboardInterrupt:
        emit("interrupted")
    else:
        emit("not_interrupted")
    actions = np.arange(args.num_envs) % NUM_ACTIONS
    _obs, rewards, *_ = env.step(actions)
    emit("next_step", rewards_mod=(rewards % NUM_ACTIONS).tolist(),
         actions=actions.tolist(), counts=(rewards // NUM_ACTIONS).tolist())
    env.close()
    emit("end", alive=[pid for pid in env.worker_pids if pid_alive(pid)],
         segments=own_segments())


def interrupt_storm(args) -> None:
    """Step as fast as possible while the test sends SIGINT every few milliseconds (then
    SIGUSR1 to stop). Every step that completes must carry its own replies: reward % 4 is
    the action sent, the count it encodes grows, and the obs holds that count."""
    stats = {"interrupts": 0, "steps": 0, "bad": 0, "worker_steps": 0, "worker_lost": 0}
    stop, armed = [], []

    def count_interrupt(*_):
        if armed:  # not while this script itself prints "ready"
            stats["interrupts"] += 1
            raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))  # sent after the last SIGINT
    env = make_env(args)
    worker = shmenv.Worker(3, game_factory=functools.partial(CounterGame))
    env.reset()
    worker.child.send(("reset", None))
    worker.child.recv()
    rng = np.random.default_rng(0)
    bad_examples: list[str] = []
    state = {"counts": np.zeros(args.num_envs, dtype=np.int64), "worker_count": 0}
    signal.signal(signal.SIGINT, count_interrupt)
    emit("ready", workers=list(env.worker_pids) + [worker.process.pid])
    armed.append(True)
    while True:
        try:  # the outer loop only catches interrupts landing in the loop's own bookkeeping
            while not stop:
                try:
                    storm_iteration(env, worker, rng, state, stats, bad_examples)
                except KeyboardInterrupt:
                    pass
                except shmenv.ShmenvError as exc:
                    if "discarded" not in str(exc):
                        raise
                    stats["worker_lost"] += 1  # documented: that reply is gone, send again
            break
        except KeyboardInterrupt:
            continue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env.close()
    worker.child.close()
    emit("end", bad_examples=bad_examples[:5], segments=own_segments(),
         alive=[pid for pid in env.worker_pids if pid_alive(pid)], **stats)


def storm_iteration(env, worker, rng, state, stats, bad_examples) -> None:
    actions = rng.integers(0, NUM_ACTIONS, env.num_envs)
    obs, rewards, *_ = env.step(actions)
    step_counts = rewards.astype(np.int64) // NUM_ACTIONS
    ok = (np.array_equal(rewards.astype(np.int64) % NUM_ACTIONS, actions)
          and bool(np.all(step_counts > state["counts"]))
          and np.array_equal(obs[:, 0, 0, 0], step_counts % 256))
    state["counts"] = step_counts
    stats["steps"] += 1
    if not ok:
        stats["bad"] += 1
        bad_examples.append(f"actions {actions} rewards {rewards}")
    action = int(rng.integers(0, NUM_ACTIONS))
    worker.child.send(("step", action))
    stack, reward, _done, _info = worker.child.recv()
    count = int(reward) // NUM_ACTIONS
    if (int(reward) % NUM_ACTIONS != action or count <= state["worker_count"]
            or stack[0, 0, 0] != count % 256):
        stats["bad"] += 1
        bad_examples.append(f"Worker action {action} reward {reward}")
    state["worker_count"] = count
    stats["worker_steps"] += 1


def worker_storm(args) -> None:
    """The interrupt storm on pooled drop-in Workers (``--num-envs`` of them in one group of
    ``--num-workers`` processes) driven by the reference's send-to-all, receive-from-all
    loop: every reply received must be its Worker's own for its latest action."""
    stats = {"interrupts": 0, "rounds": 0, "replies": 0, "lost": 0, "bad": 0}
    stop, armed = [], []

    def count_interrupt(*_):
        if armed:
            stats["interrupts"] += 1
            raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))
    group = shmenv.WorkerGroup(num_processes=args.num_workers)
    workers = [shmenv.Worker(i, game_factory=functools.partial(CounterGame), group=group)
               for i in range(args.num_envs)]
    for w in workers:
        w.child.send(("reset", None))
        w.child.recv()
    rng = np.random.default_rng(0)
    sent = [0] * len(workers)  # the last action sent to each Worker
    counts = [0] * len(workers)
    bad_examples: list[str] = []
    signal.signal(signal.SIGINT, count_interrupt)
    emit("ready", workers=sorted({p.pid for p in group.processes}))
    armed.append(True)
    while True:
        try:
            while not stop:
                try:
                    for i, w in enumerate(workers):
                        action = int(rng.integers(0, NUM_ACTIONS))
                        w.child.send(("step", action))
                        sent[i] = action
                    for i, w in enumerate(workers):
                        try:
                            stack, reward, _done, _info = w.child.recv()
                        except shmenv.ShmenvError as exc:
                            if "discarded" not in str(exc):
                                raise
                            stats["lost"] += 1
                            continue
                        count = int(reward) // NUM_ACTIONS
                        if (int(reward) % NUM_ACTIONS != sent[i] or count <= counts[i]
                                or stack[0, 0, 0] != count % 256):
                            stats["bad"] += 1
                            bad_examples.append(f"Worker {i} action {sent[i]} reward {reward}")
                        counts[i] = count
                        stats["replies"] += 1
                    stats["rounds"] += 1
                except KeyboardInterrupt:
                    pass
            break
        except KeyboardInterrupt:
            continue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pids = [p.pid for p in group.processes]
    for w in workers:
        w.child.close()
    emit("end", bad_examples=bad_examples[:5], segments=own_segments(),
         alive=[pid for pid in pids if pid_alive(pid)], **stats)


def shm_too_small(args) -> None:
    """Run inside a private mount namespace whose /dev/shm is a tiny tmpfs."""
    import psutil

    import shmenv.block

    real_free_bytes = shmenv.block.shm_free_bytes
    emit("free", free=real_free_bytes())
    for inject in (False, True):
        # inject: the free-space reading lies (says plenty), so only the reservation
        # (posix_fallocate) can catch it.
        if inject:
            shmenv.block.shm_free_bytes = lambda path=SHM_DIR: 1 << 40
        try:
            env = make_env(args)
        except shmenv.SharedMemorySpaceError as exc:
            children = [c for c in psutil.Process().children()
                        if "resource_tracker" not in " ".join(c.cmdline())]
            emit("error", inject=inject, children=len(children),
                 mp_children=len(multiprocessing.active_children()), **error_fields(exc))
        else:
            env.close()
            emit("error", inject=inject, type=None)
    shmenv.block.shm_free_bytes = real_free_bytes
    # A Worker that fits, then /dev/shm filled to the last byte: its pages were reserved
    # up front, so it keeps working (no SIGBUS) and a second Worker gets a clear error.
    worker = shmenv.Worker(1, game_factory=functools.partial(CounterGame))
    worker.child.send(("reset", None))
    worker.child.recv()
    filler = os.path.join(SHM_DIR, "filler")
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\xff" * 4096)
                f.flush()
    except OSError:
        pass  # /dev/shm is full now
    emit("filled", free=real_free_bytes())
    steps_ok = 0
    for _ in range(20):
        worker.child.send(("step", 1))
        stack, *_ = worker.child.recv()
        steps_ok += int(stack[0, 0, 0]) == steps_ok + 1
    emit("full_worker", steps_ok=steps_ok)
    try:  # its group, and so its block, starts at its first command
        shmenv.Worker(2, game_factory=functools.partial(CounterGame)).child.send(
            ("reset", None))
    except shmenv.SharedMemorySpaceError as exc:
        emit("worker_error", **error_fields(exc))
    else:
        emit("worker_error", type=None)
    worker.child.close()
    if os.path.exists(filler):
        os.unlink(filler)
    emit("end", segments=own_segments())


def gc_and_exit(args) -> None:
    """Envs dropped without close() (plain, in a reference cycle, with an obs view still
    held) and an env and a Worker left open at interpreter exit."""
    import psutil

    report = {"pid": os.getpid()}
    env = make_env(args)
    env.reset()
    pids = list(env.worker_pids)
    del env
    report["dropped_alive"] = [p for p in pids if psutil_alive(p)]

    env = make_env(args)
    env.reset()
    env.self_reference = env
    pids = list(env.worker_pids)
    del env
    gc.collect()
    report["cycle_alive"] = [p for p in pids if psutil_alive(p)]

    env = make_env(args)
    obs, _ = env.reset()
    obs, *_ = env.step(np.ones(args.num_envs, dtype=np.int64))
    env.close()
    env.close()
    report["view_after_close"] = int(obs[:, 0, 0, 0].sum())
    del env

    report["segments_before_exit"] = own_segments()
    open_env = make_env(args)
    open_env.reset()
    worker = shmenv.Worker(1, game_factory=functools.partial(CounterGame))
    worker.child.send(("reset", None))
    worker.child.recv()
    unstarted = shmenv.Worker(2, game_factory=functools.partial(CounterGame))
    report["exit_workers"] = (list(open_env.worker_pids)
                              + [worker.process.pid, unstarted.process.pid])
    report["tracker"] = [c.pid for c in psutil.Process().children()
                         if "resource_tracker" in " ".join(c.cmdline())]
    emit("report", **report)
    # Exit with everything open: weakref.finalize's atexit hook must clean up.


SCENARIOS = {
    "worker-killed": worker_killed,
    "worker-exception": worker_exception,
    "parent-sigkill": parent_sigkill,
    "ctrl-c": ctrl_c,
    "interrupt-storm": interrupt_storm,
    "worker-storm": worker_storm,
    "shm-too-small": shm_too_small,
    "gc-exit": gc_and_exit,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--context", default="fork")
    parser.add_argument("--api", default="vector", choices=["vector", "compat"])
    parser.add_argument("--when", default="step", choices=["step", "reset", "idle"])
    parser.add_argument("--phase", default="running")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--relay-fanout", type=int, default=8)
    parser.add_argument("--victim", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.api == "compat":
        multiprocessing.set_start_method(args.context)
    SCENARIOS[args.scenario](args)


if __name__ == "__main__":
    main()
