class LRUCache:
    """A vendored copy of another project's cache: entries are evicted over capacity."""

    def evict(self):
        pass
