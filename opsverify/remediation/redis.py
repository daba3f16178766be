"""Redis fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      kill_idle_clients: {idle_longer_than_s: 3600}

The action takes a write-capable :class:`~opsverify.targets.redis.RedisClient`
(``writable=True``: reads and ``CLIENT KILL`` only), which exists only inside an allowed
destructive check (``redis_admin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section

if TYPE_CHECKING:
    from opsverify.targets.redis import Connection, RedisClient


class KillIdleClientsSettings(Section):
    # Client connections idle longer than this; unset: the target's idle_client_max_age_s,
    # the limit test_idle_clients judges.
    idle_longer_than_s: float | None = Field(default=None, gt=0)


class RedisRemediation(Section):
    """``remediation:`` of a redis target: an action runs only where it is listed."""

    kill_idle_clients: KillIdleClientsSettings | None = None


@dataclass(frozen=True)
class ClientRef:
    """What identifies a connection across plan and apply: its id (never reused while the
    server runs), with its address and name to tell a restarted server's new one apart."""

    id: int
    addr: str
    name: str
    idle_s: int


class KillIdleClients:
    """A leaking pool's connections, closed: client connections idle past
    ``idle_longer_than_s`` (never a replica's or master's link, a subscriber, a blocked
    client, nor opsverify's own), each killed by id and read back gone from CLIENT LIST."""

    name: ClassVar[str] = "kill_idle_clients"

    def __init__(self, client: RedisClient, settings: KillIdleClientsSettings) -> None:
        self.client = client
        self.target = client.name
        self.idle_longer_than_s = (settings.idle_longer_than_s
                                   if settings.idle_longer_than_s is not None
                                   else client.spec.idle_client_max_age_s)

    def considered(self) -> int:
        """How many connections it chooses from (for a percentage limit): every one but
        opsverify's own."""
        from opsverify.targets.redis import APPLICATION_NAME

        return sum(1 for c in self.client.client_list()
                   if not c.name.startswith(APPLICATION_NAME))

    def select(self) -> list[Item]:
        from opsverify.targets.redis import idle_clients  # targets.redis imports this module

        connections = self.client.client_list()
        return [_client_item(c) for c in idle_clients(connections, self.idle_longer_than_s)]

    def drift(self, item: Item) -> str | None:
        ref: ClientRef = item.ref
        now = self._find(ref.id)
        if now is None:
            return "the client disconnected"
        if (now.addr, now.name) != (ref.addr, ref.name):
            return f"id {ref.id} is another client now ({now.addr} {now.name!r})"
        if now.idle_s < ref.idle_s:
            return f"it sent a command since the plan ({now.cmd}, idle {now.idle_s} s)"
        if now.idle_s <= self.idle_longer_than_s:
            return f"no longer idle past {self.idle_longer_than_s:g} s (idle {now.idle_s} s)"
        return None

    def apply(self, item: Item) -> str:
        ref: ClientRef = item.ref
        closed = self.client.kill_client(ref.id)
        # CLIENT KILL counts what it closed; success is the id gone, read back.
        left = self._find(ref.id)
        if left is not None:
            raise RuntimeError(f"id {ref.id} still connected after CLIENT KILL (closed "
                               f"{closed}; idle {left.idle_s} s)")
        if closed != 1:
            raise RuntimeError(f"CLIENT KILL ID {ref.id} closed {closed} connections")
        return "killed"

    def _find(self, client_id: int) -> Connection | None:
        return next((c for c in self.client.client_list() if c.id == client_id), None)


def _client_item(connection: Connection) -> Item:
    return Item(identity=connection.describe(),
                before=f"idle {connection.idle_s} s, connected {connection.age_s} s, last "
                       f"command {connection.cmd}, flags {connection.flags}, user "
                       f"{connection.user or '?'}",
                ref=ClientRef(connection.id, connection.addr, connection.name,
                              connection.idle_s))
