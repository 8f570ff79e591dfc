from src.cache import LRUCache


def test_evict_removes_the_least_recently_used_entry():
    cache = LRUCache(2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    cache.get("a")
    cache.put("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1"


def test_cache_entries_are_evicted_over_capacity():
    cache = LRUCache(1)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert list(cache.entries) == ["b"]
