"""gymnasium's ``call``/``get_attr``/``set_attr``/``render`` across the Ray actors of
:class:`shmenv.ray.AsyncVectorEnv`.

The rules (one pending call, reserved names, one value per env or one for all, gymnasium's
error types) are :class:`shmenv.anycalls.CallsMixin`'s, the same as the local env's; here
each actor runs the call on its ``shmenv.AsyncVectorEnv`` and the results are laid end to
end in env order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shmenv.anycalls import CallsMixin
from shmenv.planning import check_timeout
from shmenv.ray_group import ActorGroup


class RayCallsMixin(CallsMixin):
    """:class:`CallsMixin` over Ray actors: one task per actor, each answering for its envs."""

    _group: ActorGroup

    def _start_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._group.start_calls("call", [(name, args, kwargs)] * len(self._group.actors))

    def _finish_call(self, timeout: float | None) -> list[Any]:
        return [result for results in self._group.collect_calls(check_timeout(timeout))
                for result in results]

    def _set_values(self, name: str, values: Sequence[Any]) -> None:
        infos = self._group.infos
        self._group.start_calls("set_attr", [(name, list(values[i.env_start:i.env_stop]))
                                             for i in infos])
        self._group.collect_calls(None)
