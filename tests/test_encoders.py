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
    from msearch.encoders import Model
    from msearch.storage import reader, record

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
    meta = record.read_meta(root / ".msearch")
    assert meta.model["query_prompt"] == "query: "
    assert meta.model["document_prompt"] == "passage of a document: "
    model = Model("tiny", "path", folder, "cpu")
    prompt = model.document_prompt_tokens
    assert prompt >= 5 and meta.chunking["max_tokens"] == 40  # as asked; passages leave room
    idx = reader.load_index(root / ".msearch")
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
    from msearch.storage import record

    folder = _custom_code_model(tmp_path_factory)
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text("the moon has phases\n\nbread rises when it is kneaded\n")
    cli("index", str(root), "--model", str(folder)).one_line_error("--trust-remote-code")
    r = cli("index", str(root), "--model", str(folder), "--trust-remote-code")
    assert r.code == 0, r.stderr
    assert "its own modelling code" in r.stderr  # said: sentence-transformers runs it
    assert record.read_meta(root / ".msearch").model["trust_remote_code"] is True
    index = str(root / ".msearch")
    cli("query", "moon", "--index", index).one_line_error("--trust-remote-code")
    r = cli("query", "moon", "--index", index, "--trust-remote-code", "--json")
    assert r.code == 0 and b"moon" in r.stdout
    r = cli("query", "moon", "--index", index, "--json", env={"MSEARCH_TRUST_REMOTE_CODE": "1"})
    assert r.code == 0


VOCAB_TEXTS = [
    *TEXTS,
    "",
    " ",
    "two  spaces",
    "<mask> and </s>",
    "[MASK] [sep] [CLS]x",
    "🌙 ÜNÏ 日本語 ﬁ ½",
    "unbelievably antidisestablishmentarianism ##ing",
    "café naïve résumé",
    "x" * 150,  # longer than WordPiece's max_input_chars_per_word
    "x" * 5000,  # past MAX_TEXT_CHARS: the full tokenizer
]


def _random_texts(seed: int, n: int) -> list[str]:
    import random

    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCXYZ éü日本語#-'.,!?0123456789 \t"
    texts = []
    for _ in range(n):
        if rng.random() < 0.5:
            texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
        else:
            texts.append("".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 30))))
    return texts


def _xlmr_large_vocab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """An XLM-R with a Unigram vocabulary just large enough to be cached."""
    from msearch.encoders.vocab_cache import CACHE_FROM

    vocab_size = CACHE_FROM + 5000
    folder = tiny(
        tmp_path_factory,
        "xlmr-large-vocab",
        family="xlm-roberta",
        pooling="mean",
        prompts={"query": "query: ", "document": "passage: "},
        vocab_size=vocab_size,
    )
    return folder, vocab_size


def _index_with(tmp_path: Path, folder: Path) -> Path:
    from clihelp import cli
    from msearch.storage import layout, record

    root = tmp_path / "notes"
    root.mkdir(exist_ok=True)
    (root / "a.md").write_text("The moon has phases.\n\nBread rises when it is kneaded.\n")
    assert cli("index", str(root), "--full", "--model", str(folder), "-q").code == 0
    meta = record.read_meta(root / ".msearch")
    assert layout.VOCAB_RE.match(meta.vocab_cache), meta.vocab_cache
    return root / ".msearch" / meta.vocab_cache


def _assert_same_tokens(cache: Path, tokenizer_json: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer

    from msearch.encoders.vocab_cache import CACHE_FILES, CachedVocab
    from msearch.storage.disk import DataFolder

    full = Tokenizer.from_file(str(tokenizer_json))
    full.no_truncation()
    full.no_padding()
    with DataFolder(cache) as opened:
        assert opened.intact(CACHE_FILES)
        fast = CachedVocab(opened, tokenizer_json, vocab_size)
    texts = VOCAB_TEXTS + _random_texts(3, 300)
    for i in range(0, len(texts), 8):  # batches small enough for the cache itself
        batch = texts[i : i + 8]
        for text, got, want in zip(
            batch, fast.encode_batch(batch), full.encode_batch(batch), strict=True
        ):
            assert got.ids == want.ids, text
            assert got.special_tokens_mask == want.special_tokens_mask, text
    assert fast._full is not None  # the long text and the added tokens went through it


def test_a_large_unigram_vocabulary_is_cached_for_cold_queries(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """An XLM-R (Unigram) tokenizer of more than CACHE_FROM pieces: the index
    keeps its vocabulary as arrays, and queries tokenize over just the pieces
    they contain, with exactly the full tokenizer's ids."""
    from clihelp import cli
    from msearch.encoders import Model, bundled_model_path
    from msearch.encoders.vocab_cache import CachedVocab
    from msearch.storage import record

    folder, vocab_size = _xlmr_large_vocab(tmp_path_factory)
    cache = _index_with(tmp_path, folder)
    _assert_same_tokens(cache, folder / "tokenizer.json", vocab_size)

    # Queries on the index go through the cache, with sentence-transformers' vectors.
    model = Model("tiny", "path", folder, "cpu", vocab_cache=cache)
    assert isinstance(model._numpy_encoder().tokenizer, CachedVocab)
    assert worst(model.encode_queries(TEXTS), st_vectors(folder, TEXTS, "query")) >= 0.99999
    root = tmp_path / "notes"
    r = cli("query", "moon phases", "--index", str(root / ".msearch"), "--json", "-k", "1")
    assert r.code == 0 and b"moon" in r.stdout
    # A re-index keeps the cache; a full rebuild with another model replaces it.
    assert cli("index", str(root), "-q").code == 0
    assert record.read_meta(root / ".msearch").vocab_cache == cache.name and cache.is_dir()
    model_dir = str(bundled_model_path())
    assert cli("index", str(root), "--full", "--model", model_dir, "-q").code == 0
    assert record.read_meta(root / ".msearch").vocab_cache != cache.name and not cache.exists()


def test_a_wordpiece_vocabulary_is_cached_for_cold_queries(tmp_path: Path) -> None:
    """BERT's WordPiece (the bundled model: 30,522 entries, 17 ms to load):
    the same tokens as the full tokenizer, and queries use the cache."""
    from msearch.encoders import Model, bundled_model_path
    from msearch.encoders.vocab_cache import CachedVocab

    folder = bundled_model_path()
    cache = _index_with(tmp_path, folder)
    _assert_same_tokens(cache, folder / "tokenizer.json", 30522)
    model = Model("bundled", "path", folder, "cpu", vocab_cache=cache)
    assert isinstance(model._numpy_encoder().tokenizer, CachedVocab)
    reference = Model("bundled", "path", folder, "cpu").encode_queries(TEXTS)
    assert worst(model.encode_queries(TEXTS), reference) >= 0.99999


@pytest.mark.parametrize("damage", ["ids", "offsets", "special", "pieces", "renamed", "unsealed"])
def test_a_damaged_vocabulary_cache_falls_back_to_the_full_tokenizer(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, damage: str
) -> None:
    """The cache sits in the index folder, which can come from anywhere:
    damage (checksums), ids outside the model's vocabulary, pieces that do
    not fit, or a cache named for another model: the model's own tokenizer
    is used (it is exact too), and the next index run writes a new cache."""
    from clihelp import cli
    from msearch.encoders import Model
    from msearch.encoders.vocab_cache import CachedVocab
    from msearch.storage import record

    folder, vocab_size = _xlmr_large_vocab(tmp_path_factory)
    cache = _index_with(tmp_path, folder)
    assert isinstance(
        Model("tiny", "path", folder, "cpu", vocab_cache=cache)._numpy_encoder().tokenizer,
        CachedVocab,
    )
    if damage == "ids":
        ids = np.load(cache / "ids.npy")
        ids[len(ids) // 2 :] += vocab_size
        (cache / "ids.npy").unlink()
        np.save(cache / "ids.npy", ids)
    elif damage == "offsets":
        offsets = np.load(cache / "offsets.npy")
        offsets[-1] += 3
        (cache / "offsets.npy").unlink()
        np.save(cache / "offsets.npy", offsets)
    elif damage == "special":
        skeleton = json.loads((cache / "skeleton.json").read_text())
        skeleton["added_tokens"][0]["id"] = 10**9
        (cache / "skeleton.json").write_text(json.dumps(skeleton))
    elif damage == "pieces":  # one flipped byte: a wrong piece, caught by its checksum
        data = bytearray((cache / "pieces.npy").read_bytes())
        data[-1000] ^= 0x01
        (cache / "pieces.npy").write_bytes(bytes(data))
    elif damage == "renamed":
        cache = cache.rename(cache.with_name("vocab-0123456789abcdef-01234567"))
    if damage not in ("pieces", "renamed", "unsealed"):
        # Crafted with matching checksums: the checks of the arrays catch it.
        (cache / "checksums.json").unlink()
        _reseal(cache)
    if damage == "unsealed":
        (cache / "checksums.json").unlink()
    model = Model("tiny", "path", folder, "cpu", vocab_cache=cache)
    assert not isinstance(model._numpy_encoder().tokenizer, CachedVocab)
    assert worst(model.encode_queries(TEXTS), st_vectors(folder, TEXTS, "query")) >= 0.99999
    if damage != "renamed":
        # Damage is noticed by the next run; a crafted cache, by a full one.
        crafted = damage not in ("pieces", "unsealed")
        root = tmp_path / "notes"
        assert cli("index", str(root), *(["--full"] if crafted else []), "-q").code == 0
        fresh = record.read_meta(root / ".msearch").vocab_cache
        assert fresh != cache.name and not cache.exists()
        model = Model("tiny", "path", folder, "cpu", vocab_cache=root / ".msearch" / fresh)
        assert isinstance(model._numpy_encoder().tokenizer, CachedVocab)


def _reseal(folder: Path) -> None:
    """checksums.json again, as a crafted index would carry it."""
    import zlib

    sums = {p.name: zlib.crc32(p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / "checksums.json").write_text(json.dumps(sums))


def _unigram_json(vocab: list[list[Any]], **parts: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": False},
    }
    spec.update(parts)
    return spec


def _cached_and_full(tmp_path: Path, spec: dict[str, Any]) -> tuple[Any, Any]:
    """The cache of a hand-made tokenizer.json, and that tokenizer."""
    from tokenizers import Tokenizer

    from msearch.encoders.vocab_cache import CachedVocab, write_cache
    from msearch.storage.disk import DataFolder

    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    folder = tmp_path / "cache"
    folder.mkdir()
    write_cache(path, folder)
    with DataFolder(folder) as opened:
        cached = CachedVocab(opened, path, 1000)
    return cached, Tokenizer.from_file(str(path))


def test_the_unigram_cache_keeps_the_unknown_penalty(tmp_path: Path) -> None:
    """Unigram scores an unknown character at the vocabulary's lowest score
    minus 10. Over only the pieces of a text that minimum would rise and an
    unknown path could win: "abcd" is ab+c+d (-75) here, not
    <unk>+bcd (-111); without the whole vocabulary's minimum it would be
    <unk>+bcd (-36)."""
    vocab = [["<unk>", 0.0], ["ab", -25.0], ["c", -25.0], ["d", -25.0], ["bcd", -1.0]]
    vocab += [["zz", -100.0]]
    cached, full = _cached_and_full(tmp_path, _unigram_json(vocab))
    assert full.encode("abcd").tokens == ["ab", "c", "d"]
    for text in ["abcd", "abcdab", "xabcd", "bcd", "zzabcd"]:
        assert cached.encode(text).ids == full.encode(text).ids, text


def test_the_unigram_cache_keeps_the_unknown_pieces_score(tmp_path: Path) -> None:
    """The unknown token's text is a piece like any other when it is not an
    added token: with its own score (-20), "<unk>" is <+unk+> (-9)."""
    vocab = [["<unk>", -20.0], ["<", -3.0], ["unk", -3.0], [">", -3.0], ["zz", -50.0]]
    cached, full = _cached_and_full(tmp_path, _unigram_json(vocab))
    assert full.encode("<unk>").tokens == ["<", "unk", ">"]
    assert cached.encode("<unk>").ids == full.encode("<unk>").ids


def test_the_cache_sees_added_tokens_the_normalizer_makes(tmp_path: Path) -> None:
    """A normalized added token matches the normalized text: "ａｂ" (full
    width) is "ab" after NFKC, so "abje" holds it, and what follows it
    starts a new word (Metaspace puts "▁" before it)."""
    vocab = [["<unk>", 0.0], ["▁", -2.0], ["a", -3.0], ["b", -3.0], ["j", -3.0], ["e", -0.5]]
    vocab += [["▁j", -0.5], ["je", -1.5], ["▁a", -1.0], ["▁ab", -1.0], ["zz", -40.0]]
    spec = _unigram_json(
        vocab,
        normalizer={"type": "NFKC"},
        pre_tokenizer={
            "type": "Metaspace",
            "replacement": "▁",
            "prepend_scheme": "always",
            "split": True,
        },
        added_tokens=[
            {
                "id": 11,
                "content": "ａｂ",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": True,
                "special": False,
            }
        ],
    )
    spec["model"]["vocab"].append(["ａｂ", 0.0])
    cached, full = _cached_and_full(tmp_path, spec)
    assert full.encode("abje").tokens == ["ab", "▁j", "e"]
    for text in ["abje", "xx abje", "je", "ａｂje"]:
        assert cached.encode(text).ids == full.encode(text).ids, text


def test_a_crafted_pipeline_in_the_cache_cannot_crash_a_query(tmp_path: Path) -> None:
    """An index can come from anywhere, its cache too (checksums and all): a
    pre-tokenizer regex that makes tokenizers panic (a Rust panic is a
    BaseException) leaves the query to the full tokenizer."""
    from msearch.encoders import Model, bundled_model_path

    folder = bundled_model_path()
    cache = _index_with(tmp_path, folder)
    skeleton = json.loads((cache / "skeleton.json").read_text())
    skeleton["pre_tokenizer"] = {
        "type": "Split",
        "pattern": {"Regex": "(\\w+\\w+)+\\s"},
        "behavior": "Isolated",
        "invert": False,
    }
    (cache / "skeleton.json").unlink()
    (cache / "skeleton.json").write_text(json.dumps(skeleton))
    (cache / "checksums.json").unlink()
    _reseal(cache)
    model = Model("bundled", "path", folder, "cpu", vocab_cache=cache)
    texts = [*TEXTS, "a" * 40 + "!", "supercalifragilisticexpialidocious" * 2]
    reference = Model("bundled", "path", folder, "cpu").encode_queries(texts)
    assert worst(model.encode_queries(texts), reference) >= 0.99999


def test_the_cache_gives_way_to_the_full_tokenizer_past_its_budget(tmp_path: Path) -> None:
    """Lookups cost about 30 µs each: a batch that would need more than the
    full tokenizer's load is tokenized by the full tokenizer."""
    from tokenizers import Tokenizer

    from msearch.encoders import bundled_model_path
    from msearch.encoders.vocab_cache import CachedVocab
    from msearch.storage.disk import DataFolder

    folder = bundled_model_path()
    cache = _index_with(tmp_path, folder)
    with DataFolder(cache) as opened:
        cached = CachedVocab(opened, folder / "tokenizer.json", 30522)
    full = Tokenizer.from_file(str(folder / "tokenizer.json"))
    full.no_padding()
    full.no_truncation()
    short = "why does the moon change shape"
    assert cached.encode(short).ids == full.encode(short).ids
    assert cached._full is None
    many = " ".join(_random_texts(5, 200))[:4000]
    assert cached.encode(many).ids == full.encode(many).ids
    assert cached._full is not None


def test_any_damage_to_a_vocabulary_cache_leaves_queries_exact(tmp_path: Path) -> None:
    """Each file of the bundled model's cache truncated, bit-flipped or
    emptied: queries give the same vectors as without a cache."""
    import random

    from msearch.encoders import Model, bundled_model_path

    folder = bundled_model_path()
    cache = _index_with(tmp_path, folder)
    reference = Model("bundled", "path", folder, "cpu").encode_queries(TEXTS)
    rng = random.Random(11)
    pristine = {p.name: p.read_bytes() for p in cache.iterdir()}
    for name, data in pristine.items():
        damaged = [b"", data[: len(data) // 2]]
        for _ in range(3):
            flipped = bytearray(data)
            flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            damaged.append(bytes(flipped))
        for bad in damaged:
            (cache / name).unlink()
            (cache / name).write_bytes(bad)
            model = Model("bundled", "path", folder, "cpu", vocab_cache=cache)
            assert worst(model.encode_queries(TEXTS), reference) >= 0.99999, name
        (cache / name).unlink()
        (cache / name).write_bytes(data)
