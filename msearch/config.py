"""How an index is tuned: which segments merge, when and how a dense search
runs in two stages, how many passages are embedded together.

One object, :class:`IndexConfig`, handed to whoever needs it (the indexer,
the searcher, the status report, the facade): a test or a benchmark makes
its own instead of patching module constants. Nothing here is stored in
the index; any of it may change between runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msearch.merge import MergePolicy, TieredMergePolicy


@dataclass(frozen=True)
class RankConfig:
    """Which parts of the ranking stage run (msearch.ranking; all by
    default). A search option, not an index setting: any of it may change
    from one query to the next (``--no-priors``, MCP ``priors``)."""

    fusion: bool = True  # False: the fixed mix (0.7 cosine + 0.3 BM25 / best)
    definitions: bool = True  # a symbol's definition before its uses
    paths: bool = True  # file names that the query names
    priors: bool = True  # tests, examples, vendored, generated, docs lower
    diversity: bool = True  # files take turns; a file matching often lifted

    @classmethod
    def plain(cls) -> RankConfig:
        """Nothing but the fixed mix: what msearch ranked by before."""
        return cls(False, False, False, False, False)


# The ranking every search gets unless asked otherwise.
FULL_RANKING = RankConfig()


@dataclass(frozen=True)
class TwoStage:
    """When a dense (or hybrid) search runs in two stages, and how wide each
    stage is (msearch.coarse picks candidates by sign bits, msearch.int8
    estimates their cosines, the best are scored exactly:
    ``Searcher._two_stage_group``; bench/coarse_recall.py and
    bench/big_search.py measured these)."""

    # From this many live passages.
    from_rows: int = 500_000
    # Candidates: 1 row in ``share`` of each segment, at least
    # ``min_candidates``. At 1 in 200 the estimate keeps 99.6% of the exact
    # top 10 of the real eval collections (30k passages, their 1,041 real
    # queries) and all of it on synthetic sets of a million and ten million
    # rows; 1 in 500 fell to 97.8% on the real ones.
    share: int = 200
    min_candidates: int = 2000
    # Rows scored exactly from float32 after the int8 estimate, across
    # segments: at least ``rescore``, ``rescore_per_k`` per hit asked for. On
    # the eval collections' real vectors and queries the estimate lies
    # within 0.0028 of the cosine (standard deviation 0.0006), and the best
    # 20 by it already keep all the recall of the first stage; 100 leave a
    # margin for other text, at a hundred float32 rows a query.
    rescore: int = 100
    rescore_per_k: int = 10
    # Rows to score exactly are prefetched (all their pages requested at
    # once) up to this many: the few a large search rescores, not a scan's
    # worth (bench/big_search.py: float32 not in the page cache).
    prefetch_rows: int = 4096

    def candidates(self, rows: int) -> int:
        """How many of ``rows`` the first stage hands on."""
        return max(self.min_candidates, rows // max(self.share, 1))

    def rescored(self, k: int) -> int:
        """How many rows, across segments, are scored exactly for a top ``k``."""
        return max(self.rescore, self.rescore_per_k * k)


@dataclass(frozen=True)
class IndexConfig:
    """Everything tunable about building and searching an index."""

    # Which segments an update merges (msearch.merge).
    merge: MergePolicy = field(default_factory=TieredMergePolicy)
    two_stage: TwoStage = field(default_factory=TwoStage)
    # Passages embedded together (msearch.pipeline.EmbedWindow): large
    # enough for efficient length-sorted batches, small enough that texts
    # never pile up in memory.
    window: int = 1024
    # Rows a merge copies at a time.
    copy_rows: int = 1 << 16
    # Rows of a segment written before its vectors (``msearch index`` commits
    # every passage's words first): the vectors of one are embedded and
    # committed together, so an interrupted run loses at most this many
    # passages' embedding (20-40 s on 2 CPU cores), and an update waits at
    # most that long for a watcher's embedding.
    pending_rows: int = 1024


DEFAULT = IndexConfig()
