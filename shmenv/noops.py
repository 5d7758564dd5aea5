"""Random no-op counts at reset, drawn exactly as envpool draws them.

envpool seeds one ``std::mt19937`` per env with the env's seed and, at every reset, draws
``std::uniform_int_distribution<int>(0, noop_max - 1)`` from it. numpy's legacy
``RandomState(seed)`` is the same Mersenne Twister with the same 32-bit seeding, so one
``randint(0, 2**32, dtype=uint32)`` is one raw engine output; libstdc++ (GCC >= 11) maps it
onto the range with Lemire's multiply-and-reject method, reproduced here. One draw per
reset costs ~2 µs, off the step path.
"""

from __future__ import annotations

import numpy as np

_MASK32 = 0xFFFFFFFF


class NoopDraws:
    """The no-op counts of one env: ``draw()`` is uniform on ``0 .. noop_max - 1``.

    >>> [NoopDraws(0, 30).draw() for _ in range(1)]
    [16]
    """

    __slots__ = ("_engine", "_n", "_threshold")

    def __init__(self, seed: int, noop_max: int) -> None:
        if noop_max < 1:
            raise ValueError(f"noop_max must be >= 1 to draw no-op counts, got {noop_max}")
        self._engine = np.random.RandomState(int(seed) & _MASK32)
        self._n = int(noop_max)
        self._threshold = (2**32 - self._n) % self._n

    def _next_u32(self) -> int:
        return int(self._engine.randint(0, 2**32, dtype=np.uint32))

    def draw(self) -> int:
        n = self._n
        product = self._next_u32() * n
        if (product & _MASK32) < n:  # rejection is rare: only below (2**32 - n) % n
            while (product & _MASK32) < self._threshold:
                product = self._next_u32() * n
        return product >> 32
