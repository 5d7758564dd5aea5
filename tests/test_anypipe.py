"""A generic worker's raw-descriptor pipe speaks exactly multiprocessing's framing."""

import multiprocessing

import pytest

from shmenv.anypipe import WorkerPipe

pytestmark = pytest.mark.timeout(30)


def test_worker_pipe_reads_and_writes_what_a_connection_does():
    main, worker = multiprocessing.Pipe()
    pipe = WorkerPipe(worker)
    try:
        # Commands of 4 bytes (a step) and longer (a reset's pickle), queued back to back.
        commands = [b"\x01\x00\x00\x00", b"\x02\x00\x00\x00" + bytes(range(200)),
                    b"\x01\x00\x00\x00", b"\x05\x00\x00\x00\x07\x00\x00\x00"]
        for command in commands:
            main.send_bytes(command)
        assert [pipe.receive() for _ in commands] == commands
        # Replies: empty, one byte (both from cached frames, twice), short, and one larger
        # than the raw path takes.
        replies = [b"", b"\x01", b"", b"\x01", b"info" * 250, bytes(range(256)) * 300]
        for reply in replies:
            pipe.send(reply)
            assert main.recv_bytes() == reply
        main.close()
        with pytest.raises(EOFError):
            pipe.receive()
    finally:
        worker.close()
