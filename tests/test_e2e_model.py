"""End-to-end with the real bundled model (all-MiniLM-L6-v2) on sample_corpus/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE, snapshot
from msearch.cli import app
from msearch.encoders import bundled_model_path
from msearch.models import query_encoder
from msearch.query import Searcher
from msearch.storage import ownership, reader, record

pytestmark = pytest.mark.model
QUESTIONS = json.loads((Path(__file__).parent / "data" / "sample_questions.json").read_text())
KEYS = ["rank", "score", "path", "start_line", "end_line", "text"]


def msearch_cmd() -> list[str]:
    exe = shutil.which("msearch")
    assert exe, "msearch is not on PATH: install the package (pip install -e .)"
    return [exe]


def run_cli(
    *args: str, cwd: Path | None = None, input: str | None = None, env: dict[str, str] | None = None
):  # type: ignore[no-untyped-def]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [*msearch_cmd(), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=input,
        env=full_env,
        timeout=600,
    )


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index_dir = tmp_path_factory.mktemp("e2e") / "index"
    before = snapshot(SAMPLE)
    r = run_cli("index", str(SAMPLE), "--index", str(index_dir))
    assert r.returncode == 0, r.stderr
    assert "all-MiniLM-L6-v2" in r.stderr  # the offline fallback says so on stderr
    assert "indexed 30 files" in r.stderr and r.stdout == ""
    assert snapshot(SAMPLE) == before
    return index_dir


def test_index_records_the_model(sample_index: Path) -> None:
    idx = reader.load_index(sample_index)
    assert idx.meta.model["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert idx.meta.dim == 384 and idx.meta.model["max_seq_length"] == 256
    assert len(idx.meta.model["fingerprint"]) == 64
    assert idx.meta.count > 30  # long documents give several passages


@pytest.mark.parametrize("case", QUESTIONS, ids=[q["path"] for q in QUESTIONS])
def test_top_hit_is_the_right_file(sample_index: Path, case: dict[str, str]) -> None:
    idx = reader.load_index(sample_index)
    hits = Searcher(idx, query_encoder(idx)).query(case["question"], k=1)
    assert hits[0].abs_path == str(SAMPLE / case["path"])


def test_fast_path_ranks_like_sentence_transformers(sample_index: Path) -> None:
    """The reference is sentence-transformers itself (``encode_query``), not
    msearch's Model: a reference that went through msearch would compare the
    numpy encoder with itself."""
    from sentence_transformers import SentenceTransformer

    idx = reader.load_index(sample_index)
    fast = Searcher(idx, query_encoder(idx))
    st = SentenceTransformer(str(bundled_model_path()), device="cpu")
    ref = Searcher(idx, lambda texts: st.encode_query(list(texts), normalize_embeddings=True))
    questions = [q["question"] for q in QUESTIONS] + ["moon", "how to keep knives sharp"]
    for q in questions:
        a = [(h.abs_path, h.start_line) for h in fast.query(q, k=10)]
        b = [(h.abs_path, h.start_line) for h in ref.query(q, k=10)]
        assert a == b, q


def test_subprocess_jsonl(sample_index: Path) -> None:
    r = run_cli("query", "why does the moon change shape", "--index", str(sample_index), "-k", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == KEYS
    assert first["path"].endswith("astronomy/moon-phases.md")
    assert "\x1b[" not in r.stdout and r.stderr == ""


def test_subprocess_exit_codes(sample_index: Path) -> None:
    r = run_cli("query", "moon", "--index", str(sample_index), "--min-score", "0.99")
    assert r.returncode == 1 and r.stdout == ""
    r = run_cli("query", "", "--index", str(sample_index))
    assert r.returncode == 2 and "empty query" in r.stderr
    r = run_cli("query", "moon", "--index", str(sample_index), "--model", "/nonexistent/model")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_closed_pipe_is_quiet(sample_index: Path) -> None:
    cmd = " ".join(msearch_cmd())
    r = subprocess.run(
        ["bash", "-c", f"{cmd} query - --index '{sample_index}' -k 50 -f tsv | head -1"],
        input="bread\n" * 40,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 1
    assert r.stderr == ""


def test_query_path_imports_no_torch(sample_index: Path) -> None:
    code = (
        "import sys\n"
        "from msearch.cli import main\n"
        f"sys.argv = ['msearch', 'query', 'compost smell', '--index', {str(sample_index)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy, code, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "HEAVY [] 0" in r.stderr, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["path"].endswith("composting.md")


def test_cli_runner_with_real_model(sample_index: Path) -> None:
    r = CliRunner().invoke(
        app, ["query", "packing a small bag", "--index", str(sample_index), "-l"]
    )
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].endswith("travel/packing-light.md")


def test_unknown_model_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("hello\n")
    r = run_cli("index", str(tmp_path / "c"), "--model", "nobody/no-such-model-xyz")
    assert r.returncode == 2
    assert "no-such-model-xyz" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c" / ".msearch" / "meta.json").exists()


def test_small_reindex_skips_torch_and_matches_it(tmp_path: Path) -> None:
    """A re-index after one edit embeds on numpy (no torch import) with the same vectors."""
    import numpy as np

    corpus = tmp_path / "c"
    shutil.copytree(SAMPLE, corpus, ignore=shutil.ignore_patterns(".msearch"))
    assert run_cli("index", str(corpus), "-q").returncode == 0
    target = corpus / "astronomy" / "eclipses.txt"
    target.write_text(target.read_text() + "Eclipse glasses protect your eyes.\n")
    code = (
        "import sys\n"
        "from msearch.cli import main\n"
        f"sys.argv = ['msearch', 'index', {str(corpus)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH', 'torch' in sys.modules, code, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "TORCH False 0" in r.stderr and "1 changed" in r.stderr, r.stderr
    small = reader.load_index(corpus / ".msearch")
    r = run_cli("index", str(tmp_path / "c"), "--full", "-q", "--model", "all-MiniLM-L6-v2")
    assert r.returncode == 0
    full = reader.load_index(corpus / ".msearch")
    (small_rows, small_vecs), (full_rows, full_vecs) = small.table(), full.table()
    assert np.array_equal(small_rows, full_rows)
    cos = (small_vecs * full_vecs).sum(axis=1)
    assert cos.min() >= 0.9999


def test_long_query_notice(sample_index: Path) -> None:
    long = "how do the phases of the moon work " * 60
    r = run_cli("query", long, "--index", str(sample_index), "-k", "1")
    assert r.returncode == 0
    assert "longer than the model's 256 tokens" in r.stderr


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from msearch.encoders import bundled_model_path

    dst = tmp_path_factory.mktemp("model") / "minilm"
    shutil.copytree(bundled_model_path(), dst)
    return dst


def test_changed_weights_are_detected_not_trusted(tmp_path: Path, local_model: Path) -> None:
    corpus = tmp_path / "c"
    shutil.copytree(SAMPLE / "astronomy", corpus)
    r = run_cli("index", str(corpus), "--model", str(local_model), "-q")
    assert r.returncode == 0, r.stderr
    weights = local_model / "model.safetensors"
    os.utime(weights)  # same bytes, new mtime: the fingerprint is re-checked and matches
    r = run_cli("query", "eclipse", "--index", str(corpus / ".msearch"), "-k", "1")
    assert r.returncode == 0, r.stderr
    data = bytearray(weights.read_bytes())
    data[-1000] ^= 0xFF  # different weights under the same name
    weights.write_bytes(bytes(data))
    r = run_cli("query", "eclipse", "--index", str(corpus / ".msearch"), "-k", "1")
    assert r.returncode == 2
    assert "not the one that built this index" in r.stderr


def test_query_bytes_that_are_not_utf8_reach_the_real_tokenizer(
    sample_index: Path,
) -> None:
    """Issue 11, case 6: invalid UTF-8 on the command line and on stdin went
    into the tokenizer as lone surrogates and ended in its traceback."""
    bad = os.fsdecode(b"why does the moon change shape \xff\xfe")
    r = subprocess.run(
        [*msearch_cmd(), "query", bad, "--index", str(sample_index), "-k", "1", "--json"],
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["path"].endswith(".md")
    r = subprocess.run(
        [*msearch_cmd(), "query", "-", "--index", str(sample_index), "-k", "1", "--json"],
        input=b"\xff moon phases\n",
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["query"] == "\ufffd moon phases"


def test_mcp_server_with_the_real_model_over_stdio(sample_index: Path) -> None:
    """`msearch mcp` as an agent's client starts it: the SDK's client over
    stdio, the bundled model loaded once, hybrid search by default, and the
    same hits as `msearch query`."""
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, get_default_environment

    question = "how do I stop my bread from being dense"
    params = StdioServerParameters(
        command=msearch_cmd()[0],
        args=["mcp", "--index", str(sample_index)],
        env={**get_default_environment(), "HF_HUB_OFFLINE": "1"},
    )

    async def main():  # type: ignore[no-untyped-def]
        async with Client(params, read_timeout_seconds=300) as client:
            first = await client.call_tool("search", {"query": question, "k": 5})
            again = await client.call_tool("search", {"query": question, "k": 5, "context": 1})
            return first, again

    first, again = anyio.run(main)
    assert not first.is_error, first.content
    got = first.structured_content["results"]
    r = run_cli("query", question, "--index", str(sample_index), "--json", "-k", "5", cwd=SAMPLE)
    want = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(h["path"], h["start_line"]) for h in got] == [
        (w["path"], w["start_line"]) for w in want
    ]
    assert [h["score"] for h in got] == pytest.approx([w["score"] for w in want], abs=1e-5)
    assert got[0]["path"].startswith("cooking/")
    assert "before" in again.structured_content["results"][0]


def test_a_long_query_notice_is_one_line_with_one_prefix(sample_index: Path) -> None:
    """Regression: the CLI added its prefix to notices that carry their own
    ("msearch: msearch: ...")."""
    long_query = " ".join(["bread"] * 600)
    r = run_cli("query", long_query, "--index", str(sample_index), "--json", "-k", "1")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "msearch: query is longer than the model's 256 tokens; only its beginning is used "
        "(as sentence-transformers does)"
    ]


REAL_QUERIES = [
    "how far away are the stars",
    "why is bread dense",
    "when to plant tomatoes",
    "how much water do houseplants need",
    "benefits of regular exercise",
    "how to sleep better",
    "what is a function in programming",
    "how to debug a program",
    "packing light for a long trip",
    "cheap ways to travel",
    "what causes the phases of the moon",
    "how to sharpen a knife",
    "keeping soil healthy",
    "what is a black hole",
    "healthy breakfast ideas",
    "version control for code",
]


@pytest.fixture(scope="module")
def real_lines() -> tuple[list[str], object, object]:
    """Every line of sample_corpus/ longer than a few words, embedded by the
    bundled model as passages, and real queries embedded as queries."""
    import numpy as np

    from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model

    lines = sorted(
        {
            line.strip()
            for f in sorted(SAMPLE.rglob("*"))
            if f.is_file()
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines()
            if len(line.strip()) > 30
        }
    )
    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    queries = [q["question"] for q in QUESTIONS] + REAL_QUERIES
    vectors = np.asarray(model.encode(lines), dtype=np.float32)
    return lines, vectors, np.asarray(model.encode_queries(queries), dtype=np.float32)


def test_staged_search_finds_what_the_exact_scan_finds_on_real_vectors(
    tmp_path: Path, real_lines: tuple
) -> None:
    """Issue 15's recall check on real vectors: the bundled model's vectors
    of sample_corpus's lines and real queries, the stages forced on and
    squeezed (1 row in 10 as candidates, 20 rescored from float32) so that
    the sign bits and the int8 codes each have to choose."""
    import numpy as np

    from msearch.config import RankConfig, TwoStage
    from msearch.lexical import LexicalParams, build_lexical
    from msearch.ranking import analyze
    from msearch.storage.segment import SegmentWriter

    lines, vectors, qvecs = real_lines
    n, dim = vectors.shape
    assert n > 500
    index_dir = tmp_path / "idx"
    ownership.claim(index_dir)
    writer = SegmentWriter(ownership.new_segment_dir(index_dir), dim)
    ids = np.arange(n)
    rows = np.stack([0 * ids, ids + 1, ids + 1, 0 * ids, 0 * ids], axis=1).astype(np.int32)
    writer.append(rows, vectors, np.zeros((n, 16), np.uint8))
    info = writer.close(build_lexical(lines))
    meta = record.Meta(
        root=str(tmp_path),
        model={"name": "test", "dim": dim},
        chunking={"max_tokens": 256, "overlap_tokens": 32},
        walk={},
        files=[record.FileRecord("lines.txt", 0, 0, "", 0, 0, n)],
        dim=dim,
        segments=[info],
        lexical=LexicalParams.default().to_json(),
    )
    ownership.commit(index_dir, meta)
    stages = TwoStage(from_rows=0, share=10, min_candidates=0, rescore=20, rescore_per_k=2)
    index = reader.load_index(index_dir)
    assert index.segments[0].int8() is not None
    texts = [f"q{i}" for i in range(len(qvecs))]
    lookup = dict(zip(texts, qvecs, strict=True))

    def encode(batch: list[str]) -> np.ndarray:
        return np.stack([lookup[t] for t in batch])

    # The stages' recall and exact scores, not the ranking (whose turns
    # would show a file's later passages at saturated scores):
    plain = RankConfig.plain()
    staged = Searcher(index, encode, None, "dense", stages=stages, rank_config=plain)
    exact = Searcher(index, encode, None, "dense", exact=True, stages=stages, rank_config=plain)
    infos = [analyze(texts[0])]
    assert staged._two_stage_group(texts[:1], infos, None, 10) is not None
    found = 0
    for text, q in zip(texts, qvecs, strict=True):
        got = staged.query(text, 10)
        want = {h.start_line for h in exact.query(text, 10)}
        found += len({h.start_line for h in got} & want)
        for h in got:  # every score exact
            assert h.score == pytest.approx(float(vectors[h.start_line - 1] @ q), abs=1e-5)
    assert found / (10 * len(texts)) >= 0.97, found
