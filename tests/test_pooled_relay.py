"""Relayed frames of drop-in Workers: one frame to process 0 carries every process's commands.

Covers shmenv.pooled_relay and docs/migration.md: the reference's send-to-all loop goes out
as one relayed frame per step; a failure in a relayed step stays with its process (a game
error, a process that dies or hangs, process 0 itself dying), and the other processes'
Workers get their own replies; a reply that is truly gone is said to be, never made up.
"""

from __future__ import annotations

import functools
import os
import signal

import pytest

import shmenv
from shmenv.fakegames import NUM_ACTIONS, CounterGame
from shmenv.pooled import WorkerGroup
from shmenv.pooled_members import Member
from tests.test_pooled_workers import close_all, counter_workers, step_all

pytestmark = pytest.mark.usefixtures("no_leaked_segments")


def frames_of(workers):
    return workers[0].child.group._commands._frames


def run_ahead(workers, steps: int = 1) -> None:
    """Step ``workers`` alone (their frames go directly): their counters run ahead."""
    for _ in range(steps):
        for w in workers:
            w.child.send(("step", 0))
        for w in workers:
            w.child.recv()


@pytest.mark.parametrize("num_processes", [2, 3])
def test_the_reference_loop_goes_out_as_one_relayed_frame_per_step(num_processes):
    workers = counter_workers(6, WorkerGroup(num_processes=num_processes))
    try:
        for step in range(1, 6):
            actions = [(step + i) % NUM_ACTIONS for i in range(6)]
            results = step_all(workers, actions)
            assert [int(r[1]) for r in results] == [step * NUM_ACTIONS + a for a in actions]
            assert [int(r[0][0, 0, 0]) for r in results] == [step] * 6
        assert frames_of(workers).relayed_frames == 5
    finally:
        close_all(workers)


def test_a_single_process_does_not_relay():
    workers = counter_workers(3, WorkerGroup(num_processes=1))
    step_all(workers, [1, 2, 3])
    assert frames_of(workers).relayed_frames == 0
    close_all(workers)


def test_a_game_error_in_a_relayed_step_closes_only_its_process():
    workers = counter_workers(4, WorkerGroup(num_processes=2), fail_at_step=4)
    run_ahead(workers[2:], 2)  # process 1's games reach step 4 first, in a relayed step
    step_all(workers, [0] * 4)
    frames = frames_of(workers)
    for w in workers:
        w.child.send(("step", 1))
    assert frames.relayed is not None  # that step went as one relayed frame
    assert [int(w.child.recv()[1]) for w in workers[:2]] == [2 * NUM_ACTIONS + 1] * 2
    for w in workers[2:]:
        with pytest.raises(shmenv.WorkerError, match="emulator error at step 4") as caught:
            w.child.recv()
        assert "seeds 2, 3" in str(caught.value) and "Worker traceback:" in str(caught.value)
        with pytest.raises(shmenv.ClosedError, match="its process failed"):
            w.child.send(("step", 1))
    assert [int(r[1]) for r in step_all(workers[:2], [2, 3])] == [14, 15]
    close_all(workers)


def test_a_process_dying_in_a_relayed_step_closes_only_its_workers():
    workers = counter_workers(4, WorkerGroup(num_processes=2), exit_at_step=3)
    run_ahead(workers[2:])
    step_all(workers, [0] * 4)
    victim = workers[2].process
    for w in workers:
        w.child.send(("step", 1))
    for w in workers[2:]:
        with pytest.raises(shmenv.WorkerDiedError, match=f"pid {victim.pid}.*seeds 2, 3"):
            w.child.recv()
    results = [int(w.child.recv()[1]) for w in workers[:2]]
    assert results == [2 * NUM_ACTIONS + 1] * 2
    victim.join(timeout=5)
    assert victim.exitcode == 3
    close_all(workers)


def test_process_0_dying_in_a_relayed_step_leaves_the_others_their_replies():
    """Process 0 forwards the step, then dies in its own game: process 1's reply, which it
    never read, is read from process 1's own pipe."""
    workers = counter_workers(4, WorkerGroup(num_processes=2), exit_at_step=4)
    run_ahead(workers[:2], 2)
    step_all(workers, [0] * 4)
    root = workers[0].process
    for w in workers:
        w.child.send(("step", 2))
    assert [int(w.child.recv()[1]) for w in workers[2:]] == [2 * NUM_ACTIONS + 2] * 2
    for w in workers[:2]:
        with pytest.raises(shmenv.WorkerDiedError, match=f"pid {root.pid}.*seeds 0, 1"):
            w.child.recv()
    # The survivors go on with a frame of their own (nothing is relayed any more).
    assert [int(r[1]) for r in step_all(workers[2:], [3, 3])] == [15, 15]
    close_all(workers)


def test_process_0_killed_between_steps_costs_the_others_nothing():
    workers = counter_workers(4, WorkerGroup(num_processes=2))
    step_all(workers, [0] * 4)
    root = workers[0].process
    os.kill(root.pid, signal.SIGKILL)
    root.join(timeout=5)
    for w in workers:
        w.child.send(("step", 1))
    assert [int(w.child.recv()[1]) for w in workers[2:]] == [2 * NUM_ACTIONS + 1] * 2
    for w in workers[:2]:
        with pytest.raises(shmenv.WorkerDiedError, match="SIGKILL"):
            w.child.recv()
    close_all(workers)


def stop_one_then_send_to_all(stopped_worker: int, action: int):
    """4 Workers in 2 processes with a 0.5 s timeout, one step done; then the process of
    Worker ``stopped_worker`` gets SIGSTOP and every Worker is sent ``action``."""
    workers = counter_workers(4, WorkerGroup(num_processes=2, timeout=0.5))
    step_all(workers, [0] * 4)
    hung = workers[stopped_worker].process
    os.kill(hung.pid, signal.SIGSTOP)
    for w in workers:
        w.child.send(("step", action))
    return workers, hung


def test_a_hung_process_in_a_relayed_step_is_the_one_named_and_killed():
    """Process 1 stops: process 0 waits for it in the relay, and the group's timeout must
    kill process 1 (found from the progress counters), not process 0, whose Workers keep
    their replies."""
    workers, hung = stop_one_then_send_to_all(2, 1)
    with pytest.raises(shmenv.WorkerTimeoutError, match=f"pid {hung.pid}.*seeds 2, 3"):
        workers[2].child.recv()
    assert [int(w.child.recv()[1]) for w in workers[:2]] == [2 * NUM_ACTIONS + 1] * 2
    with pytest.raises(shmenv.WorkerTimeoutError):
        workers[3].child.recv()
    hung.join(timeout=5)
    assert hung.exitcode == -signal.SIGKILL
    assert workers[0].process.is_alive()
    close_all(workers)


def test_a_reply_process_0_read_before_failing_is_said_lost_not_run_again():
    """White-box: process 1 ran the relayed command (its RECEIVED counter says so) and its
    pipe holds no reply, so process 0 had read it. Its Workers' recv() must say the reply is
    lost; re-sending the command would step the games twice."""
    workers = counter_workers(4, WorkerGroup(num_processes=2))
    step_all(workers, [0] * 4)  # one relayed step, fully read
    frames = frames_of(workers)
    for slot in (2, 3):
        frames.members[slot] = Member.SENT
    frames.salvage(1, [2, 3])  # as if process 0 had died after reading process 1's reply
    for w in workers[2:]:
        with pytest.raises(shmenv.ShmenvError, match="lost: shmenv pool process 0.*ran"):
            w.child.recv()
    # Not run twice: the next step is each game's second.
    assert [int(r[1]) for r in step_all(workers, [1] * 4)] == [2 * NUM_ACTIONS + 1] * 4
    close_all(workers)


def test_closing_a_process_s_last_worker_mid_relay_keeps_the_others_replies():
    workers = counter_workers(4, WorkerGroup(num_processes=2), step_delay_s=0.05)
    step_all(workers, [0] * 4)
    for w in workers:
        w.child.send(("step", 1))
    for w in workers[2:]:  # process 1 stops while its relayed step runs
        w.child.close()
    assert [int(w.child.recv()[1]) for w in workers[:2]] == [2 * NUM_ACTIONS + 1] * 2
    assert [int(r[1]) for r in step_all(workers[:2], [2, 2])] == [14, 14]
    close_all(workers)


def test_a_worker_used_alone_in_a_relaying_group_is_not_held_back():
    """A frame held for the relay goes out at the first recv(): a Worker used alone (send
    then recv) never waits for the others' commands."""
    factory = functools.partial(CounterGame)
    group = WorkerGroup(num_processes=2)
    workers = [shmenv.Worker(i, game_factory=factory, group=group) for i in range(4)]
    for w in workers[:2]:  # process 0's frame is complete and held for a relayed frame
        w.child.send(("step", 1))
    assert int(workers[0].child.recv()[1]) == NUM_ACTIONS + 1
    assert int(workers[1].child.recv()[1]) == NUM_ACTIONS + 1
    assert frames_of(workers).relayed_frames == 0
    close_all(workers)


def test_a_worker_of_another_process_outlives_a_hung_process_0():
    """Process 0 stops before it passes the step on; the first recv() is process 1's
    Worker's: after the timeout, process 0 is killed as hung and process 1, which never got
    its command, gets it directly; its Workers' replies are their own, stepped once."""
    workers, hung = stop_one_then_send_to_all(0, 3)
    assert [int(w.child.recv()[1]) for w in workers[2:]] == [2 * NUM_ACTIONS + 3] * 2
    for w in workers[:2]:
        with pytest.raises(shmenv.WorkerTimeoutError, match=f"pid {hung.pid}.*seeds 0, 1"):
            w.child.recv()
    hung.join(timeout=5)
    assert hung.exitcode == -signal.SIGKILL
    assert [int(r[1]) for r in step_all(workers[2:], [1, 1])] == [13, 13]
    close_all(workers)


def test_process_0_relays_to_every_other_process_up_to_the_fanout():
    from shmenv.planning import DEFAULT_RELAY_FANOUT, split_envs
    from shmenv.pooled_relay import relay_children

    assert relay_children(split_envs(8, 1)) == ()
    assert relay_children(split_envs(8, 2)) == ((1, 4, 8),)
    assert relay_children(split_envs(9, 3)) == ((1, 3, 6), (2, 6, 9))
    most = split_envs(64, 1 + DEFAULT_RELAY_FANOUT)
    assert [child for child, _, _ in relay_children(most)] == list(range(1, len(most)))
    assert relay_children(split_envs(64, 2 + DEFAULT_RELAY_FANOUT)) == ()


def test_relay_fanout_0_sends_a_message_per_process():
    workers = counter_workers(4, WorkerGroup(num_processes=2, relay_fanout=0))
    assert [int(r[1]) for r in step_all(workers, [1, 2, 3, 0])] == [5, 6, 7, 4]
    assert frames_of(workers).relayed_frames == 0
    close_all(workers)
    for wrong in (-1, 1.5, True):
        with pytest.raises(ValueError, match="relay_fanout"):
            WorkerGroup(relay_fanout=wrong)


def test_bench_measures_the_drop_in_without_the_relay_on_request():
    from shmenv.benchmarks import contenders, throughput

    (direct,) = throughput.select("dropin-direct")
    assert direct.kwargs == {"relay_fanout": 0} and not direct.default
    result = contenders.measure_dropin("Breakout", 4, seconds=0.3, warmup=0.1, seed=47,
                                       relay_fanout=0)
    assert result["env_steps"] > 0 and result["env_steps"] % 4 == 0
