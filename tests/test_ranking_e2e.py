"""The ranking stack end to end on a small code repository (tests/data/coderepo):
through the facade, the CLI (table, jsonl, ``-l``, stdin) and the MCP
service, with the fake embedder (lexical order decides where the fake's
vectors are noise), and once with the real bundled model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clihelp import cli
from conftest import CODE_SAMPLE, FakeEmbedder, FakeModels, write
from msearch import api
from msearch.config import RankConfig
from msearch.service import SearchService
from msearch.storage.record import read_meta


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "coderepo"
    shutil.copytree(CODE_SAMPLE, root)
    return root


def _index(repo: Path, fake: FakeEmbedder | None = None) -> api.Index:
    models = FakeModels(fake or FakeEmbedder())
    api.update(repo, models=models)
    return api.open_index(repo / ".msearch", models=models, cwd=repo)


def _paths(index: api.Index, query: str, **kwargs: object) -> list[str]:
    [hits] = index.search(api.SearchRequest((query,), **kwargs))  # type: ignore[arg-type]
    return [h.path for h in hits]


def test_vendored_folders_are_not_indexed(repo: Path) -> None:
    _index(repo)
    paths = {f.path for f in read_meta(repo / ".msearch").files}
    assert "src/cache.py" in paths
    assert not any(p.startswith("vendor/") for p in paths)


def _first(index: api.Index, query: str, **kwargs: object) -> api.Hit:
    [hits] = index.search(api.SearchRequest((query,), **kwargs))  # type: ignore[arg-type]
    return hits[0]


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_a_symbol_query_brings_its_definition_first(repo: Path, mode: str) -> None:
    """uses.py names TypeAdapter five times, TypeAdapter.java defines it
    (its nullSafe method names it twice)."""
    index = _index(repo)
    for query in ("TypeAdapter", "where is the TypeAdapter class defined"):
        hit = _first(index, query, mode=mode)
        assert hit.path == "src/TypeAdapter.java" and "class TypeAdapter" in hit.text
    # The definition alone, not the file's name nor the test's prior:
    only = RankConfig(paths=False, priors=False)
    assert "class TypeAdapter" in _first(index, "TypeAdapter", mode=mode, ranking=only).text
    assert "class LRUCache" in _first(index, "LRUCache", mode=mode, ranking=only).text
    plain = _first(index, "TypeAdapter", mode="lexical", ranking=RankConfig.plain())
    assert plain.path == "src/uses.py"  # words alone: the file that repeats the name


def test_a_method_is_found_by_its_qualified_name(repo: Path) -> None:
    index = _index(repo)
    [hit, *_] = index.search(api.SearchRequest(("LRUCache.evict",), mode="lexical"))[0]
    assert hit.path == "src/cache.py"
    assert "def evict" in hit.text


def test_tests_examples_and_docs_wait_unless_asked_for(repo: Path) -> None:
    index = _index(repo)
    question = "how are cache entries evicted over capacity"
    got = _paths(index, question, mode="lexical", files=True)
    assert got[0] == "src/cache.py"
    assert set(got[1:]) >= {"tests/test_cache.py", "examples/cache_demo.py"}
    unranked = _paths(index, question, mode="lexical", files=True, ranking=RankConfig(priors=False))
    assert unranked[0] != "src/cache.py"  # the test and the demo say it more often
    asked = _paths(index, "tests for cache eviction", mode="lexical", files=True)
    assert asked[0] == "tests/test_cache.py"


def test_files_take_turns(tmp_path: Path) -> None:
    """One long file that matches everywhere does not fill the list."""
    root = tmp_path / "repo"
    big = "".join(
        f"def read_config_{i}(path):\n"
        f"    # parse the config file, config section {i}, config keys and values\n"
        + "".join(f"    step_{i}_{j} = load(path, {j})\n" for j in range(8))
        + "    return config\n\n\n"
        for i in range(8)
    )
    write(root, "src/big.py", big)
    for name in ("loader", "settings", "cli"):
        write(
            root,
            f"src/{name}.py",
            f"def {name}():\n    # parse the config\n"
            + "".join(f"    x{j} = y{j}\n" for j in range(10))
            + "    pass\n",
        )
    index = _index(root)
    got = _paths(index, "parse the config", mode="lexical", k=4)
    crowded = _paths(index, "parse the config", mode="lexical", k=4, ranking=RankConfig.plain())
    assert crowded == ["src/big.py"] * 4
    assert got[0] == "src/big.py" and len(set(got)) == 4


def test_every_interface_ranks_alike(repo: Path, use_fake: FakeEmbedder) -> None:
    """The table's order, jsonl, -l, stdin and MCP search: one ranking."""
    del use_fake
    assert cli("index", str(repo)).code == 0
    question = "how are cache entries evicted over capacity"
    index = api.open_index(repo / ".msearch", models=FakeModels(FakeEmbedder()), cwd=repo)
    want = [
        (h.path, h.start_line)
        for h in index.search(api.SearchRequest((question,), k=5, mode="lexical"))[0]
    ]
    root = str(repo / ".msearch")
    out = cli("query", question, "-k", "5", "--lexical-only", "--json", "--index", root)
    lines = [json.loads(line) for line in out.text.splitlines()]
    assert [(Path(d["path"]).relative_to(repo).as_posix(), d["start_line"]) for d in lines] == want
    stdin = cli(
        "query", "-", "-k", "5", "--lexical-only", "--json", "--index", root, input=question
    )
    from_stdin = [json.loads(line) for line in stdin.text.splitlines()]
    assert [{k: v for k, v in d.items() if k != "query"} for d in from_stdin] == lines
    files = cli("query", question, "-l", "-k", "3", "--lexical-only", "--index", root)
    firsts = list(dict.fromkeys(Path(d["path"]).relative_to(repo).as_posix() for d in lines))
    assert [Path(p).relative_to(repo).as_posix() for p in files.text.split()][:1] == firsts[:1]
    service = SearchService(repo / ".msearch", models=FakeModels(FakeEmbedder()))
    served = service.search(question, k=5, mode="lexical")
    assert [(Path(h.abs_path).relative_to(repo).as_posix(), h.start_line) for h in served] == want
    no_priors = service.search(question, k=5, mode="lexical", priors=False)
    assert [h.path for h in no_priors] != [h.path for h in served]
    plain = cli("query", question, "-l", "--lexical-only", "--no-priors", "--index", root)
    assert plain.code == 0 and "src/cache.py" not in plain.text.split()[0]


@pytest.mark.model
def test_the_real_model_finds_definitions_and_code_before_tests(repo: Path) -> None:
    api.update(repo)
    index = api.open_index(repo / ".msearch", cwd=repo)
    assert _paths(index, "TypeAdapter")[0] == "src/TypeAdapter.java"
    got = _paths(index, "how does the cache drop the least recently used entries", files=True)
    assert got[0] == "src/cache.py"
    assert got.index("src/cache.py") < got.index("tests/test_cache.py")
