"""An in-memory cache with a size limit."""

from collections import OrderedDict


class LRUCache:
    """Keeps the most recently used entries, up to a fixed number."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        """The value stored under key, marked as just used."""
        if key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, key: str, value: bytes) -> None:
        """Store value under key, then drop the oldest entries over capacity."""
        self.entries[key] = value
        self.entries.move_to_end(key)
        self.evict()

    def evict(self) -> None:
        """Remove the least recently used entries until the cache fits its capacity."""
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


def make_cache(capacity: int = 128) -> LRUCache:
    return LRUCache(capacity)
