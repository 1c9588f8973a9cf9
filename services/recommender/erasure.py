"""What a user's erasure removes from Redis: their recent history, their answer-cache
generation and every cached answer, and the in-process copies on every replica (through the
invalidation channel).

Replicas that follow the catalogue topic live erase when the erasure record arrives (each does
it; deleting twice is harmless); a replica reading the topic from its start at boot does not,
or it would wipe what a returning user did since. Answers cached before the erasure are never
served after it anyway: the catalogue's version is part of every answer's key, and the user is
answered as one the model does not know (services.recommender.catalog_state). The history
consumer skips the user's events that the erasure covers, should it read them later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import redis

from services.recommender.cache import INVALIDATION_CHANNEL, Keys

# Characters that are patterns in SCAN's MATCH: a user id is matched literally.
_GLOB = re.compile(r"([*?\[\]\\])")


class RedisEraser:
    """Deletes users' keys, one pipeline per call."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    @classmethod
    def connect(cls, url: str, *, timeout_s: float = 2.0) -> RedisEraser:
        return cls(redis.Redis.from_url(url, socket_timeout=timeout_s,
                                        socket_connect_timeout=timeout_s))

    def erase(self, users: Iterable[str]) -> int:
        """Delete each user's history, generation and cached answers; how many keys went."""
        users = list(users)
        if not users:
            return 0
        keys = [key for user in users for key in (Keys.history(user), Keys.generation(user))]
        for user in users:
            pattern = _GLOB.sub(r"\\\1", Keys.answer(user, "")) + "*"
            keys += self._client.scan_iter(match=pattern, count=1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(*keys)
        pipe.publish(INVALIDATION_CHANNEL, "\n".join(users))
        deleted, _ = pipe.execute()
        return int(deleted)

    def close(self) -> None:
        self._client.close()
