"""The two-stage dense search of large indexes (an estimate from the sign
bits, then exact scores of the candidates) against the exact scan."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import msearch.coarse
import msearch.query
from msearch.coarse import SCAN_NAME, ScanIndex, pack, sign_bits
from msearch.config import RankConfig, TwoStage
from msearch.errors import IndexCorrupt
from msearch.filters import PathFilter
from msearch.lexical import LexicalParams, build_lexical
from msearch.query import Searcher, open_lexical
from msearch.ranking import analyze
from msearch.storage import ownership, reader, record
from msearch.storage.segment import BITS_NAME, SegmentWriter

DIM = 64
FILES = 20
PER_FILE = 600
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]


def clustered(n: int, centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy copies of cluster centers: neighbourhoods as real embeddings have."""
    v = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, DIM)) * 0.08
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An index of 12,000 clustered vectors in two segments, 20 files, and
    queries near the clusters."""
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((300, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = clustered(FILES * PER_FILE, centers, rng)
    queries = clustered(60, centers, rng)
    texts = [" ".join(rng.choice(WORDS, 6)) for _ in range(len(vectors))]
    index_dir = tmp_path_factory.mktemp("two") / "idx"
    ownership.claim(index_dir)
    infos, records = [], []
    for s, (f0, f1) in enumerate(((0, 12), (12, FILES))):
        writer = SegmentWriter(ownership.new_segment_dir(index_dir), DIM)
        for f in range(f0, f1):
            ids = np.arange(f * PER_FILE, (f + 1) * PER_FILE)
            line = ids - f * PER_FILE + 1
            rows = np.stack([0 * ids + f - f0, line, line, 0 * ids, 0 * ids], axis=1)
            writer.append(rows.astype(np.int32), vectors[ids], np.zeros((PER_FILE, 16), np.uint8))
            records.append(
                record.FileRecord(
                    f"d{f % 2}/f{f:02d}.txt", 0, 0, "", s, (f - f0) * PER_FILE, PER_FILE
                )
            )
        infos.append(writer.close(build_lexical(texts[f0 * PER_FILE : f1 * PER_FILE])))
    meta = record.Meta(
        root=str(index_dir.parent),
        model={"name": "test", "dim": DIM},
        chunking={"max_tokens": 256, "overlap_tokens": 32},
        walk={},
        files=records,
        dim=DIM,
        segments=infos,
        lexical=LexicalParams.default().to_json(),
    )
    ownership.commit(index_dir, meta)
    return index_dir, vectors, queries


# Two stages from any size, with 300 candidates a segment (of 7,200 and
# 4,800 rows).
STAGES = TwoStage(from_rows=0, share=10**9, min_candidates=300)


def searchers(
    index: reader.IndexReader, queries: np.ndarray, mode: str, ranking: RankConfig | None = None
) -> tuple[Searcher, Searcher, list[str]]:
    """Two-stage and exact searchers; ``ranking``: the ranking stage (its
    full default shows saturated scores for a file's later passages; the
    plain one shows the cosines themselves)."""
    names = [f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]} q{i}" for i in range(len(queries))]
    lookup = dict(zip(names, queries, strict=True))

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([lookup[t] for t in texts])

    lexical = open_lexical(index) if mode != "dense" else None
    staged = Searcher(index, encode, lexical, mode, stages=STAGES, rank_config=ranking)
    exact = Searcher(index, encode, lexical, mode, exact=True, stages=STAGES, rank_config=ranking)
    return staged, exact, names


def key(hit: msearch.query.Hit) -> tuple[str, int]:
    return (hit.path, hit.start_line)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_two_stages_find_what_the_exact_scan_finds(data, mode: str) -> None:  # type: ignore[no-untyped-def]
    index_dir, _, queries = data
    index = reader.load_index(index_dir)
    staged, exact, names = searchers(index, queries, mode)
    assert staged.two_stage() and not exact.two_stage()
    recalls = []
    for got, want in zip(staged.query_many(names, 10), exact.query_many(names, 10), strict=True):
        exact_score = {key(h): h.score for h in want}
        # Every score is the exact one: the second stage rescores exactly.
        for h in got:
            if key(h) in exact_score:
                assert h.score == pytest.approx(exact_score[key(h)], abs=1e-6)
        recalls.append(len({key(h) for h in got} & set(exact_score)) / 10)
    assert np.mean(recalls) >= 0.99, np.mean(recalls)


def test_scores_are_exact_cosines(data) -> None:  # type: ignore[no-untyped-def]
    index_dir, vectors, queries = data
    index = reader.load_index(index_dir)
    staged, _, names = searchers(index, queries, "dense", RankConfig.plain())
    for name, q in zip(names[:10], queries[:10], strict=True):
        for h in staged.query(name, 10):
            f = int(h.path[-6:-4])
            row = f * PER_FILE + h.start_line - 1
            assert h.score == pytest.approx(float(vectors[row] @ q), abs=1e-6)


def test_filters_and_dead_rows_are_applied_before_the_cut(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index_dir, _, queries = data
    index = reader.load_index(index_dir)
    staged, exact, names = searchers(index, queries, "dense")
    only = PathFilter(["d1/"])  # half the files: the first stage fetches twice as many
    for name in names[:10]:
        got = staged.query(name, 10, paths=only)
        assert len(got) == 10 and all(
            h.path.startswith(str(index.root / "d1")) or "d1/" in h.path for h in got
        )
        want = exact.query(name, 10, paths=only)
        assert len({key(h) for h in got} & {key(h) for h in want}) >= 9
    # Dead rows: drop two files from the file table, as an update does.
    meta = record.read_meta(index_dir)
    dead = {meta.files[3].path, meta.files[15].path}
    kept = [f for f in meta.files if f.path not in dead]
    segments = [dataclasses.replace(s) for s in meta.segments]
    segments[0].live_rows -= PER_FILE
    segments[1].live_rows -= PER_FILE
    moved = tmp_path / "idx"
    import shutil

    shutil.copytree(index_dir, moved)
    meta2 = dataclasses.replace(meta, files=kept, segments=segments, root=str(index_dir.parent))
    ownership.commit(moved, meta2)
    index2 = reader.load_index(moved)
    staged2, _, _ = searchers(index2, queries, "dense")
    for name in names:
        assert not {h.path for h in staged2.query(name, 10)} & {
            str(index_dir.parent / p) for p in dead
        }


def test_a_narrow_filter_scans_its_rows_exactly(data) -> None:  # type: ignore[no-untyped-def]
    index_dir, _, queries = data
    index = reader.load_index(index_dir)
    staged, exact, names = searchers(index, queries, "dense")
    one = PathFilter(["f07.txt"])  # 1 file of 20: fetching enough would be most rows
    infos = [analyze(names[0])]
    assert staged._two_stage_group([names[0]], infos, one.row_mask(index)) is None
    assert [key(h) for h in staged.query(names[0], 10, paths=one)] == [
        key(h) for h in exact.query(names[0], 10, paths=one)
    ]


def test_segments_without_sign_bits_are_scanned_exactly(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    index_dir, _, queries = data
    moved = tmp_path / "old"
    shutil.copytree(index_dir, moved)
    meta = json.loads((moved / "meta.json").read_text())
    (moved / meta["segments"][1]["name"] / BITS_NAME).unlink()  # as an older msearch wrote it
    index = reader.load_index(moved)
    staged, exact, names = searchers(index, queries, "dense")
    assert not staged.two_stage()
    from msearch.status import search_kind

    assert search_kind(index, STAGES).startswith("exact (segments without sign bits")
    assert search_kind(reader.load_index(index_dir), STAGES).startswith("two-stage")


def test_damaged_sign_bits_fall_back_to_the_exact_scan(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Sign bits only speed a search up: damaged ones are set aside (the
    exact scan answers) and `status` reports the damage."""
    import shutil

    index_dir, _, queries = data
    for how in ("shape", "folder"):
        moved = tmp_path / how
        shutil.copytree(index_dir, moved)
        seg = json.loads((moved / "meta.json").read_text())["segments"][0]["name"]
        path = moved / seg / BITS_NAME
        path.unlink()
        if how == "shape":
            np.save(path, np.zeros((5, DIM // 8), np.uint8))
        else:
            path.mkdir()
        index = reader.load_index(moved)
        staged, exact, names = searchers(index, queries, "dense")
        assert not staged.two_stage()
        assert [key(h) for h in staged.query(names[0])] == [key(h) for h in exact.query(names[0])]
        with pytest.raises(IndexCorrupt, match="bits.npy"):
            reader.verify_checksums(moved, index.meta)


def test_filtered_rows_far_from_the_query_are_still_found(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression (review): the rows a filter passes may all lie beyond what
    the first stage fetched; the search then scans them exactly, never
    answering with fewer hits than exist. Also k above the candidates."""
    index_dir, vectors, queries = data
    index = reader.load_index(index_dir)
    staged, exact, names = searchers(index, queries, "dense", RankConfig.plain())
    # Half the rows, all of them farther from the query than any other:
    # the first stage fetches the nearest, and none of them passes.
    far = (vectors @ queries[0]) < np.median(vectors @ queries[0])
    for searcher in (staged, exact):
        searcher._mask = lambda _paths: far  # type: ignore[method-assign]
    infos = [analyze(names[0])]
    assert staged._two_stage_group([names[0]], infos, far, 10) is not None  # still two stages
    every = PathFilter(["*"])
    got = staged.query(names[0], 10, paths=every)
    assert len(got) == 10  # not fewer because the nearest rows are filtered out
    for h in got:
        row = int(h.path[-6:-4]) * PER_FILE + h.start_line - 1
        assert far[row] and h.score == pytest.approx(float(vectors[row] @ queries[0]), abs=1e-6)
    many = staged.query(names[0], 1000)
    assert len(many) == 1000
    want = exact.query(names[0], 50)
    assert [key(h) for h in many[:10]] == [key(h) for h in want[:10]]
    assert len({key(h) for h in many[:50]} & {key(h) for h in want}) >= 45


def test_sign_bits_are_written_with_every_segment(data) -> None:  # type: ignore[no-untyped-def]
    index_dir, vectors, _ = data
    index = reader.load_index(index_dir)
    bits = np.concatenate([np.asarray(s.bits()) for s in index.segments])
    assert np.array_equal(bits, sign_bits(vectors))
    assert np.array_equal(np.unpackbits(bits, axis=1)[:, :DIM].astype(bool), vectors > 0)


def estimate(bits: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """The first stage's estimate by brute force: ``vec . sign(row)``."""
    return (np.unpackbits(bits, axis=1)[:, : len(vec)] * 2.0 - 1.0) @ vec


@pytest.mark.parametrize("bad", [0, 500, 5000])
def test_the_best_usable_rows_by_the_estimate(data, bad: int) -> None:  # type: ignore[no-untyped-def]
    """The first stage against brute force, per segment: its 300 usable
    rows with the best estimate when its unusable rows are none or few
    (fast-scan asked for that many more, here the best ones, then dropped),
    and by Hamming distance when they are many."""
    from msearch.coarse import HAMMING_FACTOR, nearest_rows

    index_dir, _, queries = data
    index = reader.load_index(index_dir)
    vec = queries[3]
    bits = np.concatenate([np.asarray(s.bits()) for s in index.segments])
    est = estimate(bits, vec)
    dist = np.unpackbits(bits ^ sign_bits(vec), axis=1).sum(axis=1)
    unusable = np.zeros(len(bits), bool)
    unusable[np.argsort(-est, kind="stable")[:bad]] = True
    counts = [int(unusable[s.offset : s.offset + s.rows].sum()) for s in index.segments]
    got, approx = nearest_rows(
        vec,
        index.segments,
        10,
        unusable if bad else None,
        counts,
        candidates=STAGES.candidates,
    )
    assert np.array_equal(got, np.unique(got)) and not unusable[got].any()
    # Rows from the fast-scan path carry the int8 estimate of their cosine
    # (the Hamming fallback's need exact scores: NaN).
    vectors = np.concatenate([np.asarray(s.embeddings) for s in index.segments])
    known = ~np.isnan(approx)
    assert approx[known] == pytest.approx(vectors[got[known]] @ vec, abs=0.01)
    for seg, n_bad in zip(index.segments, counts, strict=True):
        mine = got[(got >= seg.offset) & (got < seg.offset + seg.rows)]
        ok = np.flatnonzero(~unusable[seg.offset : seg.offset + seg.rows]) + seg.offset
        if n_bad <= 4 * 300:
            assert len(mine) == 300 and known[np.isin(got, mine)].all()
            # The kernel's tables are 8-bit: ties near the cut may differ.
            best = np.sort(est[ok])[::-1][:300]
            assert np.sort(est[mine])[::-1] == pytest.approx(best, abs=0.05)
        else:
            assert len(mine) == HAMMING_FACTOR * 300 and not known[np.isin(got, mine)].any()
            assert np.array_equal(np.sort(dist[mine]), np.sort(dist[ok])[: len(mine)])


def test_the_scan_order_is_written_with_every_segment(data) -> None:  # type: ignore[no-untyped-def]
    index_dir, _, _ = data
    for seg in reader.load_index(index_dir).segments:
        bits = np.asarray(seg.bits())
        stored = np.load(seg.path / SCAN_NAME)
        assert np.array_equal(stored, pack(bits))


@pytest.mark.parametrize("how", ["missing", "shape", "shuffled", "last block"])
def test_a_scan_file_that_does_not_match_its_bits_is_rebuilt(
    data, tmp_path: Path, how: str
) -> None:  # type: ignore[no-untyped-def]
    """The fast-scan order only speeds a search up and can be rebuilt from
    the bits: a missing file, one of the wrong size, or one whose blocks are
    not those of the bits (a faiss whose layout changed, a file from
    elsewhere) is reordered again, and the search finds what it found."""
    import shutil

    index_dir, _, queries = data
    moved = tmp_path / how
    shutil.copytree(index_dir, moved)
    seg_name = json.loads((moved / "meta.json").read_text())["segments"][0]["name"]
    path = moved / seg_name / SCAN_NAME
    good = np.load(path)
    if how == "missing":
        path.unlink()
    elif how == "shape":
        np.save(path, good[:-1])
    elif how == "shuffled":
        np.save(path, np.roll(good, 1))
    else:
        bad = good.copy()
        bad[-5] ^= 0xFF
        np.save(path, bad)
    index = reader.load_index(moved)
    scan = index.segments[0].scan()
    assert scan is not None
    fresh = ScanIndex.open(np.asarray(index.segments[0].bits()), None)
    vec = queries[5]
    assert np.array_equal(np.sort(scan.nearest(vec, 200)), np.sort(fresh.nearest(vec, 200)))
    staged, exact, names = searchers(index, queries, "dense")
    assert staged.two_stage()
    assert [key(h) for h in staged.query(names[5])] == [key(h) for h in exact.query(names[5])]


def test_the_estimate_orders_rows_as_brute_force_does() -> None:
    """``ScanIndex.nearest`` against ``vec . sign(row)`` computed by numpy,
    for dimensions of the bundled model and of a small one, and row counts
    that do and do not fill the last block."""
    rng = np.random.default_rng(3)
    for rows, dim in ((1000, 64), (777, 384), (5, 384)):
        vectors = rng.standard_normal((rows, dim)).astype(np.float32)
        bits = sign_bits(vectors)
        scan = ScanIndex.open(bits, pack(bits))
        vec = rng.standard_normal(dim).astype(np.float32)
        est = estimate(bits, vec)
        # The kernel's tables are 8-bit: a row's estimate may be off by
        # half a step in each of dim/4 tables (a step is 1/255 of a
        # table's span, 2 * sum(|vec|) over its four components at most).
        slack = float(dim / 4 * 0.5 * 2 * np.abs(vec).reshape(-1, 4).sum(axis=1).max() / 255)
        k = min(20, rows)
        got = scan.nearest(vec, k)
        assert len(got) == len(set(got.tolist())) == k
        assert np.sort(est[got]) == pytest.approx(np.sort(est)[-k:], abs=slack)
        # Every row, best first: each within the slack of its place (a
        # block laid out wrongly would put its rows far from theirs).
        order = scan.nearest(vec, rows)
        assert sorted(order.tolist()) == list(range(rows))
        assert est[order] == pytest.approx(np.sort(est)[::-1], abs=2 * slack)


def test_only_the_best_estimates_are_read_as_float32(data, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """With int8 codes, of each segment's 300 candidates only the best
    ``rescored(k)`` rows by the codes' estimate, across segments, get exact
    scores; a segment without codes has all of its candidates scored."""

    index_dir, _, queries = data
    index = reader.load_index(index_dir)
    assert all(seg.int8() is not None for seg in index.segments)
    staged, exact, names = searchers(index, queries, "dense")
    read: list[int] = []
    scorer = Searcher._exact_cosines

    def counted(self: Searcher, rows: np.ndarray, vec: np.ndarray) -> np.ndarray:
        read.append(len(rows))
        return scorer(self, rows, vec)

    monkeypatch.setattr(Searcher, "_exact_cosines", counted)
    got = staged.query(names[1], 10)
    assert read == [STAGES.rescored(10)]
    assert [key(h) for h in got] == [key(h) for h in exact.query(names[1], 10)]
    read.clear()
    index.segments[1]._int8 = None  # as a segment written before the codes
    staged.query(names[1], 10)
    assert read == [300, STAGES.rescored(10)]


@pytest.mark.parametrize("how", ["truncated", "scale"])
def test_damaged_codes_fall_back_to_float32(data, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    """Codes only speed a search up: a segment whose codes fail their check
    scores its candidates from float32, finds what the exact scan finds,
    and `status --verify` reports the damage."""
    import shutil

    from msearch.int8 import CODES_NAME, SCALE_NAME
    from msearch.status import search_kind

    index_dir, _, queries = data
    moved = tmp_path / how
    shutil.copytree(index_dir, moved)
    seg = json.loads((moved / "meta.json").read_text())["segments"][0]["name"]
    if how == "truncated":
        path = moved / seg / CODES_NAME
        path.write_bytes(path.read_bytes()[:-7])
    else:
        np.save(moved / seg / SCALE_NAME, np.full(DIM, np.inf, np.float32))
    index = reader.load_index(moved)
    assert index.segments[0].int8() is None and index.segments[1].int8() is not None
    assert "without int8 codes" in search_kind(index, STAGES)
    assert "int8 codes the best" in search_kind(reader.load_index(index_dir), STAGES)
    staged, exact, names = searchers(index, queries, "dense")
    for name in names[:10]:
        assert [key(h) for h in staged.query(name)] == [key(h) for h in exact.query(name)]
    with pytest.raises(IndexCorrupt, match="int8"):
        reader.verify_checksums(moved, index.meta)


def vm_flags(path: Path) -> list[str]:
    """The kernel's flags of this process's mapping of ``path``."""
    current = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:
            current = parts[5] if len(parts) > 5 else None
        elif current == str(path) and parts and parts[0] == "VmFlags:":
            return parts[1:]
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux's /proc/self/smaps")
def test_float32_is_read_page_by_page_once_codes_pick_its_rows(data) -> None:  # type: ignore[no-untyped-def]
    """Readahead around each of a hundred scattered rows would bring most of
    the float32 file into memory after all: a segment whose codes are in
    use has its float32 mapping advised random."""
    index_dir, _, _ = data
    seg = reader.load_index(index_dir).segments[0]
    path = (seg.path / "embeddings.npy").resolve()
    assert "rr" not in vm_flags(path)
    assert seg.int8() is not None
    assert "rr" in vm_flags(path)


def test_a_server_maps_in_the_codes_not_the_float32_vectors(
    data, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import msearch.storage.segment
    from msearch.int8 import Int8Codes

    index_dir, _, _ = data
    index = reader.load_index(index_dir)
    index.segments[1]._int8_read = True  # as a segment without codes
    touched: list[str] = []
    monkeypatch.setattr(Int8Codes, "populate", lambda self: touched.append("codes"))
    monkeypatch.setattr(
        msearch.storage.segment, "populate", lambda a: touched.append(f"float32 {len(a)}")
    )
    msearch.storage.segment.populate_segments(index.segments)
    assert touched == ["codes", f"float32 {index.segments[1].rows}"]
