"""``msearch index --ray`` (issue 15): the index a Ray cluster helps build is
the single-process index; failures leave the previous index as it was.

The cluster is a local one (``ray.init(num_cpus=2)``), started once for the
module; the fake embedder is pickled to its workers by value."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import conftest
from clihelp import invoke
from conftest import SAMPLE, FakeEmbedder, write
from msearch import distributed
from msearch.chunking import ChunkSettings
from msearch.distributed import RayIndexer
from msearch.errors import ClusterError
from msearch.indexer import build_index
from msearch.storage import layout, reader, record
from msearch.walk import WalkOptions

SMALL = ChunkSettings(max_tokens=24, overlap_tokens=4)
TESTS = Path(__file__).resolve().parent
# Ray Data's own copy of its context reads its deprecated fields.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")

    # The workers cannot import the tests' modules: the fake embedders go by value.
    cloudpickle.register_pickle_by_value(conftest)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def corpus(root: Path) -> Path:
    """sample_corpus, plus files that exercise the edges: an empty file, a
    duplicate, a long file (several parcels' worth of passages), a file
    whose name is not UTF-8, one with Windows-1252 text."""
    shutil.copytree(SAMPLE, root)
    write(root, "empty.txt", "")
    write(root, "dup/one.md", (SAMPLE / "astronomy" / "moon-phases.md").read_text())
    long = "\n\n".join(
        f"Paragraph {i}: the river carries stone and cloud toward the sea, {i} times."
        for i in range(400)
    )
    write(root, "long/river.txt", long + "\n")
    write(root, "legacy.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("cp1252"))
    (root / os.fsdecode(b"name-\xff.txt")).write_text("a name that is not UTF-8\nmoon\n")
    return root


def file_view(index_dir: Path) -> dict[str, tuple[Any, ...]]:
    """Every file's record and its passages (lines, characters, keys,
    vectors), wherever its rows are: two indexes with the same view hold
    the same thing, whatever their segments."""
    idx = reader.load_index(index_dir)
    out: dict[str, tuple[Any, ...]] = {}
    for rec in idx.meta.files:
        a, b = rec.row, rec.row + rec.rows
        if rec.rows:
            seg = idx.segments[rec.segment]
            rows = np.asarray(seg.passages[a:b, 1:]).tolist()
            keys = np.asarray(seg.keys()[a:b]).tobytes()
            vecs = np.array(seg.embeddings[a:b])
        else:
            rows, keys, vecs = [], b"", np.zeros((0, idx.meta.dim), np.float32)
        out[rec.path] = (rec.size, rec.sha256, rows, keys, vecs)
    return out


def assert_same(a: Path, b: Path, cosine: float | None = None) -> None:
    """The same files and passages; vectors equal (or within ``cosine``)."""
    va, vb = file_view(a), file_view(b)
    assert sorted(va) == sorted(vb)
    for path in va:
        (sa, ha, ra, ka, xa), (sb, hb, rb, kb, xb) = va[path], vb[path]
        assert (sa, ha, ra, ka) == (sb, hb, rb, kb), path
        if cosine is None:
            assert np.array_equal(xa, xb), path
        elif len(xa):
            assert float((xa * xb).sum(axis=1).min()) >= cosine, path


def seg_folders(index_dir: Path) -> set[str]:
    return {p.name for p in index_dir.iterdir() if p.is_dir() and p.name.startswith("seg-")}


# ------------------------------------------------------------ no cluster needed


def test_addresses_parse() -> None:
    assert distributed.parse_address("10.0.0.5:6380") == ("10.0.0.5", 6380)
    assert distributed.parse_address("ray://head:10002") == ("head", 10002)
    assert distributed.parse_address("ray://head") == ("head", distributed.CLIENT_PORT)
    assert distributed.parse_address("head") == ("head", distributed.GCS_PORT)
    assert distributed.parse_address("[::1]:7000") == ("::1", 7000)
    assert distributed.parse_address("auto") is None
    assert distributed.parse_address("local") is None
    with pytest.raises(ClusterError, match="not a port"):
        distributed.parse_address("head:http")


@pytest.mark.parametrize(
    "sizes,blocks",
    [([5], 2), ([1, 1, 1], 2), ([100, 1, 1, 1, 1], 2), ([1, 1, 1, 1, 100], 3), ([0, 0, 0], 2)],
)
def test_blocks_are_contiguous_non_empty_and_balanced(sizes: list[int], blocks: int) -> None:
    runs = distributed.split_blocks(sizes, blocks)
    assert len(runs) == min(blocks, len(sizes))
    assert [i for r in runs for i in r] == list(range(len(sizes)))
    assert all(len(r) for r in runs)
    # Balanced: no block holds more than its share and one file.
    assert max(sum(sizes[i] for i in r) for r in runs) <= sum(sizes) / len(runs) + max(sizes)
    parcels = distributed.split_parcels(sizes, 3)
    assert [i for p in parcels for i in p] == list(range(len(sizes)))
    assert all(len(p) == 1 or sum(sizes[i] for i in p) <= 3 for p in parcels)


def test_plan_uses_a_gpu_per_actor_else_a_cpu() -> None:
    sizes = [50_000] * 40
    cpu = distributed.plan_work(sizes, {"CPU": 2.0})
    assert (cpu.gpu, cpu.workers, cpu.threads, len(cpu.blocks)) == (False, 2, 1, 2)
    assert cpu.actor_cpus + distributed.CHUNK_CPUS <= 1.0
    assert len(cpu.parcels) >= distributed.PARCELS_PER_WORKER * 2
    # Blocks are whole parcels, in order, and cover every file once.
    assert [i for _, p in cpu.parcels for i in p] == list(range(len(sizes)))
    assert [i for r in cpu.blocks for i in r] == list(range(len(sizes)))
    assert all(p.start in cpu.blocks[b] and p.stop - 1 in cpu.blocks[b] for b, p in cpu.parcels)
    gpu = distributed.plan_work(sizes, {"CPU": 16.0, "GPU": 4.0})
    assert (gpu.gpu, gpu.workers, len(gpu.blocks)) == (True, 4, 4)
    assert distributed.plan_work(sizes, {"CPU": 16.0, "GPU": 4.0}, device="cpu").workers == 16
    # A small update: one parcel, one actor, one segment, whatever the cluster.
    small = distributed.plan_work([3000, 2000, 500], {"CPU": 64.0})
    assert (small.workers, len(small.blocks), len(small.parcels)) == (1, 1, 1)
    with pytest.raises(ClusterError, match="no GPUs"):
        distributed.plan_work(sizes, {"CPU": 2.0}, device="cuda")


def test_a_worker_that_does_not_see_the_folder_says_so(tmp_path: Path) -> None:
    """Without shared storage every file would look vanished (indexed as
    empty): the worker reports the missing folder instead."""
    write(tmp_path, "a.txt", "moon\n")
    batch = {
        "block": np.array([0]),
        "first": np.array([0]),
        "paths": np.array([os.fsencode(tmp_path / "a.txt") + b"\0" + b"/gone.txt"], object),
    }
    args = (distributed.ShippedEmbedder(FakeEmbedder()),)
    rest = (WalkOptions(), SMALL, b"salt", "token")
    out = distributed.read_and_chunk(batch, *args, str(tmp_path), *rest)  # type: ignore[arg-type]
    assert out["error"][0] == "" and list(out["ok"][0]) == [1, 0]  # vanished: as one process
    out = distributed.read_and_chunk(batch, *args, str(tmp_path / "nope"), *rest)  # type: ignore[arg-type]
    assert out["error"][0].startswith(f"{tmp_path / 'nope'} is not there on ")
    assert out["error"][0].endswith("at the same path on every node)")
    away = distributed.ModelOnWorker("m", "path", tmp_path / "no-model", "float32", False, None)
    with pytest.raises(ClusterError, match="the model folder .* is not there on"):
        away.counter()


def test_missing_extra_is_one_line(
    use_fake: FakeEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clihelp import cli

    write(tmp_path, "a.txt", "moon\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = cli("index", str(tmp_path), "--ray")
    out.one_line_error()
    assert out.stderr.strip() == "msearch: --ray needs Ray: pip install 'msearch[ray]'"
    assert not (tmp_path / ".msearch").exists()


def test_unreachable_cluster_is_one_line_within_seconds(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    write(tmp_path, "a.txt", "moon\n")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(TESTS / "fake_cli.py"), "index", str(tmp_path), "--ray"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    took = time.perf_counter() - t
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"msearch: cannot reach the Ray cluster at 127.0.0.1:{port} (RAY_ADDRESS): "
        "Connection refused"
    ]
    assert took < 20, took  # the interpreter and imports; no ray.init retries
    assert not (tmp_path / ".msearch").exists()


# ------------------------------------------------------------ on a local cluster


def test_ray_index_equals_the_single_process_index(cluster: Any, tmp_path: Path) -> None:
    root = corpus(tmp_path / "docs")
    ray_runner = RayIndexer()
    on_ray = build_index(
        root, tmp_path / "ray", FakeEmbedder(), chunking=SMALL, segments_writer=ray_runner
    )
    here = build_index(root, tmp_path / "one", FakeEmbedder(), chunking=SMALL)
    assert_same(tmp_path / "ray", tmp_path / "one")
    for field in ("files", "added", "passages", "embedded", "reused"):
        assert getattr(on_ray, field) == getattr(here, field), field
    assert sorted(s.rel for s in on_ray.skipped) == sorted(s.rel for s in here.skipped)
    # Really spread: a segment per worker, several parcels, both workers' vectors.
    assert ray_runner.report.workers == 2 and on_ray.segments == 2
    assert ray_runner.report.parcels >= 8
    assert sum(w[0] for w in ray_runner.report.per_worker.values()) == here.embedded
    # Merged, the two are the same arrays (rows in walk order).
    for name in ("ray", "one"):
        build_index(root, tmp_path / name, FakeEmbedder(), chunking=SMALL, compact=True)
    a, b = reader.load_index(tmp_path / "ray"), reader.load_index(tmp_path / "one")
    assert len(a.segments) == len(b.segments) == 1
    assert np.array_equal(a.segments[0].embeddings, b.segments[0].embeddings)
    # (Column 0, the file's ordinal in the segment, is not compared: a merge
    # numbers only files with passages, a fresh segment every file.)
    assert np.array_equal(a.segments[0].passages[:, 1:], b.segments[0].passages[:, 1:])


def test_cli_ray_flag(cluster: Any, use_fake: FakeEmbedder, tmp_path: Path) -> None:
    root = corpus(tmp_path / "docs")
    result = invoke("index", str(root), "--ray")
    assert result.exit_code == 0, result.output
    here = build_index(root, tmp_path / "one", FakeEmbedder())  # the CLI's defaults
    lines = result.output.strip().splitlines()
    assert lines[-2].startswith(f"msearch: indexed {here.files} files ({here.added} added")
    assert f"; {here.passages} passages ({here.embedded} embedded); " in lines[-2]
    assert lines[-1].startswith("msearch: on Ray: 2 CPU workers, 2 segments, ")
    assert lines[-1].endswith(" passages/s per worker")
    assert_same(root / ".msearch", tmp_path / "one")


@pytest.mark.parametrize("update_on_ray", [True, False], ids=["ray", "single"])
def test_update_after_a_ray_build(cluster: Any, tmp_path: Path, update_on_ray: bool) -> None:
    root = corpus(tmp_path / "docs")
    index_dir = tmp_path / "index"
    build_index(root, index_dir, FakeEmbedder(), chunking=SMALL, segments_writer=RayIndexer())
    long = root / "long" / "river.txt"
    long.write_text(long.read_text() + "\nA new last paragraph about the moon.\n")
    moved = (root / "cooking" / "bread-baking.md").read_text()
    (root / "cooking" / "bread-baking.md").unlink()
    write(root, "baking/bread.md", moved)  # renamed: its vectors come from the pool
    write(root, "added.txt", "A new file about rain and stone.\n")
    runner = RayIndexer() if update_on_ray else None
    stats = build_index(root, index_dir, FakeEmbedder(), chunking=SMALL, segments_writer=runner)
    assert (stats.added, stats.changed, stats.removed) == (2, 1, 1)
    assert stats.reused > stats.embedded  # only new text was embedded
    build_index(root, tmp_path / "fresh", FakeEmbedder(), chunking=SMALL)
    assert_same(index_dir, tmp_path / "fresh")
    # ... and what the update recorded lets the next run see no change.
    again = build_index(root, index_dir, FakeEmbedder(), chunking=SMALL, segments_writer=runner)
    assert again.unchanged == again.files and again.embedded == 0


class FailingEmbedder(FakeEmbedder):
    """Raises (or, with ``die``, kills its worker process) on a text with KABOOM."""

    def __init__(self, die: bool = False) -> None:
        super().__init__()
        self.die = die

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if any("KABOOM" in t for t in texts):
            if self.die:
                os._exit(3)
            raise RuntimeError("cannot embed KABOOM")
        return super().encode(texts, batch_size)


@pytest.mark.parametrize("die", [False, True], ids=["raises", "dies"])
def test_a_failed_worker_leaves_the_previous_index(cluster: Any, tmp_path: Path, die: bool) -> None:
    root = corpus(tmp_path / "docs")
    index_dir = tmp_path / "index"
    build_index(root, index_dir, FakeEmbedder(), chunking=SMALL)
    before_meta = (index_dir / layout.META_NAME).read_bytes()
    before_view = file_view(index_dir)
    before_folders = seg_folders(index_dir)
    write(root, "zz/bad.txt", "this passage goes KABOOM\n")
    (root / "long" / "river.txt").write_text("edited\n")
    t = time.perf_counter()
    with pytest.raises(ClusterError) as caught:
        build_index(
            root,
            index_dir,
            FailingEmbedder(die=die),
            chunking=SMALL,
            segments_writer=RayIndexer(),
        )
    assert time.perf_counter() - t < 120  # a dead worker is an error, never a hang
    message = str(caught.value)
    assert message.startswith("a Ray worker failed: ") and "\n" not in message
    assert message.endswith("the previous index is unchanged")
    if not die:
        assert "RuntimeError: cannot embed KABOOM" in message
    assert (index_dir / layout.META_NAME).read_bytes() == before_meta
    assert seg_folders(index_dir) == before_folders  # the half-written segments are gone
    assert _same_view(file_view(index_dir), before_view)
    # The next run (the file fixed) commits, and leaves no stray folder.
    write(root, "zz/bad.txt", "this passage is fine\n")
    build_index(root, index_dir, FakeEmbedder(), chunking=SMALL, segments_writer=RayIndexer())
    meta = record.read_meta(index_dir)
    assert seg_folders(index_dir) == {s.name for s in meta.segments}
    build_index(root, tmp_path / "fresh", FakeEmbedder(), chunking=SMALL)
    assert_same(index_dir, tmp_path / "fresh")


def _same_view(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> bool:
    return sorted(a) == sorted(b) and all(
        a[k][:4] == b[k][:4] and np.array_equal(a[k][4], b[k][4]) for k in a
    )


# ------------------------------------------------------------ the real model


@pytest.mark.model
def test_ray_index_with_the_bundled_model(cluster: Any, tmp_path: Path) -> None:
    from msearch.encoders import load_model
    from msearch.models import query_encoder
    from msearch.query import Searcher

    model = load_model(None, device="cpu", notice=lambda _m: None)
    runner = RayIndexer(device="cpu")
    build_index(SAMPLE, tmp_path / "ray", model, segments_writer=runner)
    build_index(SAMPLE, tmp_path / "one", model)
    assert_same(tmp_path / "ray", tmp_path / "one", cosine=0.9999)
    assert runner.report.workers == 2 and runner.report.rate_per_worker() > 0
    a, b = reader.load_index(tmp_path / "ray"), reader.load_index(tmp_path / "one")
    for question in ("why does the moon change shape", "compost smells bad", "jet lag"):
        hits_a = Searcher(a, query_encoder(a)).query(question, k=3)
        hits_b = Searcher(b, query_encoder(b)).query(question, k=3)
        assert [(h.path, h.start_line) for h in hits_a] == [(h.path, h.start_line) for h in hits_b]
        for x, y in zip(hits_a, hits_b, strict=True):
            assert abs(x.score - y.score) < 1e-3


def _blind_read_and_chunk(batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """read_and_chunk on a worker whose node cannot read one file (not
    mounted there, another owner) that the driver reads."""
    from msearch import distributed as d

    real = d.file_text

    def blind(path: Path, options: WalkOptions) -> str | None:
        return None if "hidden-from-workers" in str(path) else real(path, options)

    d.file_text = blind
    try:
        return d.read_and_chunk(batch, **kwargs)
    finally:
        d.file_text = real


def test_a_file_workers_cannot_read_is_an_error_not_an_empty_file(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): a file a worker could not read, which this
    machine reads, was committed with no passages (its old ones dropped)."""
    root = corpus(tmp_path / "docs")
    index_dir = tmp_path / "index"
    write(root, "notes/hidden-from-workers.txt", "first version about the moon\n")
    build_index(root, index_dir, FakeEmbedder(), chunking=SMALL)
    before = (index_dir / layout.META_NAME).read_bytes()
    write(root, "notes/hidden-from-workers.txt", "second version about the sun\n")
    monkeypatch.setattr(distributed, "read_and_chunk", _blind_read_and_chunk)
    with pytest.raises(ClusterError, match="hidden-from-workers.txt could not be read on a Ray"):
        build_index(root, index_dir, FakeEmbedder(), chunking=SMALL, segments_writer=RayIndexer())
    assert (index_dir / layout.META_NAME).read_bytes() == before
