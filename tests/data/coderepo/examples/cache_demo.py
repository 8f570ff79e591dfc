from src.cache import make_cache

# Demo: entries are evicted from the cache when it is over capacity.
cache = make_cache(2)
for key in "abc":
    cache.put(key, key.encode())
print(list(cache.entries))
