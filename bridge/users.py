"""Display names of Pachca users, for "who pressed", cached so a storm of clicks costs one
`GET /users/{id}` per person per TTL."""

from __future__ import annotations

import logging

from cachetools import TTLCache

from bridge.errors import PachcaError
from bridge.pachca import PachcaApi, display_name

log = logging.getLogger(__name__)


class UserNames:
    def __init__(self, pachca: PachcaApi, ttl: float, size: int = 10_000) -> None:
        self._pachca = pachca
        self._cache: TTLCache[int, str] = TTLCache(maxsize=size, ttl=ttl)

    async def name(self, user_id: int) -> str | None:
        """The person's display name, or None if Pachca cannot tell now (the caller then
        writes `<@id>`, which Pachca itself shows as @nickname)."""
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        try:
            user = await self._pachca.get_user(user_id)
        except PachcaError as exc:
            log.warning("cannot look up Pachca user %d: %s", user_id, exc)
            return None
        name = display_name(user)
        self._cache[user_id] = name
        return name

    async def names(self, user_ids: set[int]) -> dict[int, str]:
        found = {uid: await self.name(uid) for uid in sorted(user_ids)}
        return {uid: name for uid, name in found.items() if name}
