"""Any model through one encoder layer (issue 13): msearch's own encoders give
sentence-transformers' vectors for every family, pooling and prompt they
claim to cover, and anything else goes to sentence-transformers with a
notice. The reference is always sentence-transformers itself
(``encode_query`` / ``encode_document``), on small random-weight models
built here (tests/tiny_models.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import build

pytestmark = pytest.mark.model

TEXTS = [
    "why does the moon change shape",
    "How do I keep my BREAD from being dense?",
    "  leading and trailing spaces  ",
    "naïve café crème brûlée, Zürich",
    "x",
    "compost " * 200,  # longer than the model sees: truncated
    "Tetraploid arrest is dependent on p53 and beta-galactosidase activity.",
]
PROMPTS = {
    "none": ({}, True),
    "prompts": ({"query": "query: ", "document": "passage: "}, True),
    "prompts-left-out": ({"query": "Represent this question: ", "document": "doc: "}, False),
}
CASES = [
    (family, pooling, prompts)
    for family in ("bert", "xlm-roberta")
    for pooling in ("cls", "mean", "max")
    for prompts in PROMPTS
]
_BUILT: dict[str, Path] = {}


def tiny(tmp_path_factory: pytest.TempPathFactory, key: str, **kw: Any) -> Path:
    if key not in _BUILT:
        _BUILT[key] = build(tmp_path_factory.mktemp("models") / key, **kw)
    return _BUILT[key]


def st_vectors(folder: Path, texts: list[str], kind: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    encode = st.encode_query if kind == "query" else st.encode_document
    return np.asarray(encode(texts, normalize_embeddings=True))


def worst(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize(("family", "pooling", "prompts"), CASES)
def test_parity_with_sentence_transformers(
    tmp_path_factory: pytest.TempPathFactory, family: str, pooling: str, prompts: str
) -> None:
    """Queries (numpy), passages as a small job (numpy) and as a large one
    (torch): all sentence-transformers' vectors; a Dense layer on half the
    cases."""
    from msearch.encoders import Model

    prompt_map, include = PROMPTS[prompts]
    dense = (pooling == "mean") != (family == "bert")
    folder = tiny(
        tmp_path_factory,
        f"{family}-{pooling}-{prompts}",
        family=family,
        pooling=pooling,
        prompts=prompt_map,
        include_prompt=include,
        dense=dense,
        seed=len(_BUILT),
    )
    notices: list[str] = []
    model = Model("tiny", "path", folder, "cpu", notice=notices.append)
    assert model.spec.fast, model.spec.unsupported
    assert model.record.query_prompt == prompt_map.get("query", "")
    assert model.record.document_prompt == prompt_map.get("document", "")
    q_ref, d_ref = st_vectors(folder, TEXTS, "query"), st_vectors(folder, TEXTS, "document")
    queries = model.encode_queries(TEXTS)
    assert worst(queries, q_ref) >= 0.99999
    assert worst(model.encode(TEXTS), d_ref) >= 0.99999  # numpy: a small job
    assert worst(model.passage_encoder().encode(TEXTS, 3), d_ref) >= 0.99999  # torch
    if prompt_map:
        # The prompts are what makes the match: without them it is worse.
        unprompted = model._numpy_encoder().encode(TEXTS)
        assert worst(unprompted, q_ref) < worst(queries, q_ref)
    assert not notices


def test_pooling_in_a_folder_of_any_name(tmp_path_factory: pytest.TempPathFactory) -> None:
    """modules.json may put the Pooling module in any folder: CLS pooling
    read from "pool_cls" must not turn into mean pooling."""
    from msearch.encoders import Model

    folder = tiny(tmp_path_factory, "bert-cls-renamed", pooling="cls", pooling_folder="pool_cls")
    assert not (folder / "1_Pooling").exists()
    model = Model("tiny", "path", folder, "cpu")
    assert model.spec.pooling == ("cls",)
    assert worst(model.encode_queries(TEXTS), st_vectors(folder, TEXTS, "query")) >= 0.99999


def test_a_default_prompt_follows_sentence_transformers_rules(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """sentence-transformers 6 gives encode_query the "query" prompt and
    encode_document the "document" one (both exist, empty by default), so a
    default prompt name does not reach either: msearch does the same."""
    from msearch.encoders import Model

    folder = tiny(
        tmp_path_factory,
        "bert-default-prompt",
        prompts={"classification": "classify: "},
        default_prompt="classification",
    )
    model = Model("tiny", "path", folder, "cpu")
    assert (model.query_prompt, model.document_prompt) == ("", "")
    assert worst(model.encode_queries(TEXTS), st_vectors(folder, TEXTS, "query")) >= 0.99999
    assert worst(model.encode(TEXTS), st_vectors(folder, TEXTS, "document")) >= 0.99999


@pytest.mark.parametrize("pooling", ["mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_what_the_own_encoders_do_not_cover_goes_to_sentence_transformers(
    tmp_path_factory: pytest.TempPathFactory, pooling: str
) -> None:
    from msearch.encoders import Model

    folder = tiny(tmp_path_factory, f"bert-{pooling}", pooling=pooling)
    notices: list[str] = []
    model = Model("tiny", "path", folder, "cpu", notice=notices.append)
    assert not model.spec.fast and any(pooling in r for r in model.spec.unsupported)
    got_q, got_d = model.encode_queries(TEXTS), model.encode(TEXTS)
    assert worst(got_q, st_vectors(folder, TEXTS, "query")) >= 0.99999
    assert worst(got_d, st_vectors(folder, TEXTS, "document")) >= 0.99999
    assert len(notices) == 1 and "sentence-transformers runs it" in notices[0]
    assert pooling in notices[0]


def test_spec_reads_everything_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    from msearch.encoders import read_spec

    folder = tiny(
        tmp_path_factory,
        "xlmr-spec",
        family="xlm-roberta",
        pooling="cls",
        dense=True,
        prompts={"query": "q: ", "passage": "p: "},
        include_prompt=False,
    )
    spec = read_spec(folder)
    assert spec.model_type == "xlm-roberta" and spec.position_offset == 2
    assert spec.pooling == ("cls",) and not spec.include_prompt
    assert len(spec.dense) == 1 and spec.dense[0].activation == "tanh" and spec.dim == 16
    assert spec.normalize and spec.similarity == "cosine"
    # sentence-transformers 6: "document" exists (empty), so it wins over "passage".
    assert (spec.query_prompt(), spec.document_prompt()) == ("q: ", "")
    assert spec.max_seq_length == 128


def test_prompts_are_recorded_and_count_toward_passage_size(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from clihelp import cli
    from msearch import store
    from msearch.encoders import Model

    folder = tiny(
        tmp_path_factory,
        "bert-mean-prompts-index",
        prompts={"query": "query: ", "document": "passage of a document: "},
    )
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text(" ".join(f"word{i}" for i in range(400)) + "\n")
    r = cli("index", str(root), "--model", str(folder), "--chunk-tokens", "40", "-q")
    assert r.code == 0, r.stderr
    meta = store.read_meta(root / ".msearch")
    assert meta.model["query_prompt"] == "query: "
    assert meta.model["document_prompt"] == "passage of a document: "
    model = Model("tiny", "path", folder, "cpu")
    prompt = model.document_prompt_tokens
    assert prompt >= 5 and meta.chunking["max_tokens"] == 40  # as asked; passages leave room
    idx = store.load_index(root / ".msearch")
    text = (root / "a.md").read_text()
    passages, _ = idx.table()
    for _, _, _, start, end in passages:
        n = model.counter.count([text[start:end]])[0]
        assert n + prompt + 2 <= 40  # prompt, passage and [CLS]/[SEP] fit the budget
    r = cli("query", "word12 word13", "--index", str(root / ".msearch"), "--dense-only", "--json")
    assert r.code == 0


def _custom_code_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose transformer is its own class (``auto_map``), as
    nomic-embed's and gte's are."""
    folder = tiny(tmp_path_factory, "bert-custom-code")
    (folder / "configuration_custom.py").write_text(
        "from transformers import BertConfig\n\n"
        "class CustomConfig(BertConfig):\n    model_type = 'custom-bert'\n"
    )
    (folder / "modeling_custom.py").write_text(
        "from transformers import BertModel\n"
        "from .configuration_custom import CustomConfig\n\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n"
    )
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "custom-bert"
    cfg["architectures"] = ["CustomModel"]
    cfg["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModel": "modeling_custom.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_trust_remote_code_is_opt_in_and_recorded(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from clihelp import cli
    from msearch import store

    folder = _custom_code_model(tmp_path_factory)
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text("the moon has phases\n\nbread rises when it is kneaded\n")
    cli("index", str(root), "--model", str(folder)).one_line_error("--trust-remote-code")
    r = cli("index", str(root), "--model", str(folder), "--trust-remote-code")
    assert r.code == 0, r.stderr
    assert "its own modelling code" in r.stderr  # said: sentence-transformers runs it
    assert store.read_meta(root / ".msearch").model["trust_remote_code"] is True
    index = str(root / ".msearch")
    cli("query", "moon", "--index", index).one_line_error("--trust-remote-code")
    r = cli("query", "moon", "--index", index, "--trust-remote-code", "--json")
    assert r.code == 0 and b"moon" in r.stdout
    r = cli("query", "moon", "--index", index, "--json", env={"MSEARCH_TRUST_REMOTE_CODE": "1"})
    assert r.code == 0
