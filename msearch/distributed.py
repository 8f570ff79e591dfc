"""Indexing on a Ray cluster: ``msearch index DIR --ray`` (the ``ray`` extra).

The driver (this process) walks and plans as it always does, and writes
the index; only the work in between moves to the cluster. This module is
a ``SegmentsWriter`` (see msearch.indexer): given the files to embed, it
returns their segments, written by the driver.

- The files are split into blocks (contiguous in walk order, balanced by
  bytes, at least one per worker): each block becomes one segment. Each
  block is made of parcels (at most PARCEL_BYTES_CPU of files, or
  PARCEL_BYTES_GPU): the unit of work that flows through Ray Data, so
  memory is bounded by a few parcels in flight whatever the size of the
  update.
- Ray Data reads and chunks each parcel in a CPU task (the single-process
  rules: ``pipeline.file_text``, the index's chunker (``chunking.chunker_for``)
  with the model's token counter, ``passage_keys``), then embeds it on a
  pool of actors: one per GPU where the cluster has GPUs (``--device cpu``
  aside), else one per CPU with one torch thread each. Each actor builds
  the model once (the driver's folder, precision and prompts) and embeds
  only the passages whose key is not in the reuse pool (its keys go
  through the object store once).
- Results stream back to the driver in order; it fills in reused vectors
  from its pool and writes the segments with ``SegmentWriter``. Workers
  never touch the index folder: when anything fails, the driver removes
  the segments it was writing and raises ``ClusterError``; nothing is
  committed and the previous index stays as it was.

Workers read the files themselves, by absolute path: every node must see
the folder (and the model folder) at the same path, as on one machine or a
shared file system. docs/how-it-works.md ("Indexing on a Ray cluster: how")
says why.

Ray is imported inside the functions here, only when ``--ray`` is asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from msearch.chunking import ChunkSettings, TokenCounter, chunker_for
from msearch.encoders import Embedder, embed_async
from msearch.errors import ClusterError, MsearchError
from msearch.lexical import LexicalParams
from msearch.pipeline import (
    Embed,
    EmbedWindow,
    WriteJob,
    add_rows,
    file_text,
    mark_unread,
    passage_arrays,
)
from msearch.storage.record import SegmentInfo
from msearch.storage.segment import KEY_BYTES, SegmentWriter
from msearch.walk import WalkOptions

INSTALL_HINT = "pip install 'msearch[ray]'"
# Seconds to wait for a TCP connection to RAY_ADDRESS before saying it is
# unreachable (ray.init itself retries for a minute or more).
CONNECT_TIMEOUT = 3.0
GCS_PORT, CLIENT_PORT = 6379, 10001
# A parcel: files read, chunked and embedded together. Small enough that a
# worker's share of a small update is still several parcels (the last one
# to finish sets the wall time), large enough for efficient batches.
PARCEL_BYTES_CPU = 128 << 10
PARCEL_BYTES_GPU = 1 << 20
PARCELS_PER_WORKER = 4
# How long the embedding actors may take to be placed on the cluster
# (Ray Data's default is forever).
ACTOR_WAIT_SECONDS = 600
# Below this, spreading a parcel's files over more actors (each loading the
# model) is not worth it: a small update stays one parcel, one segment.
PARCEL_MIN_BYTES = 16 << 10
# A block (one segment) holds at most this many bytes of files.
BLOCK_BYTES = 1 << 30
# The CPU share of a read-and-chunk task; CPU actors leave it free.
CHUNK_CPUS = 0.25
# A read-and-chunk task lost with its worker (a node gone) runs again this
# many times. An embedding actor that dies is not restarted: the run ends
# with one line instead (a crash that repeats must not retry forever; and
# Ray logs an error line for every restartable actor Ray Data creates,
# ray-project/ray#53727).
TASK_RETRIES = 3


# ------------------------------------------------------------ the cluster


def require_ray() -> Any:
    """The ``ray`` module, or a one-line ``ClusterError`` saying how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ClusterError(f"--ray needs Ray: {INSTALL_HINT}") from None
    return ray


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address (``host:port``, ``ray://host:port``,
    ``[v6]:port``, a bare host); None for ``auto`` and ``local``, which
    name no host."""
    addr = address.strip()
    if addr in ("auto", "local"):
        return None
    default = GCS_PORT
    for scheme in ("ray://", "gcs://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme) :]
            default = CLIENT_PORT if scheme == "ray://" else GCS_PORT
    addr = addr.split("/", 1)[0]
    if addr.startswith("["):  # [v6]:port
        host, _, rest = addr[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, port_text = addr.split(":")
    else:
        host, port_text = addr, ""
    if not host:
        raise ClusterError(f"RAY_ADDRESS={address!r} names no host (use host:port)")
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        raise ClusterError(f"RAY_ADDRESS={address!r}: {port_text!r} is not a port") from None
    if not 0 < port < 65536:
        raise ClusterError(f"RAY_ADDRESS={address!r}: {port} is not a port")
    return host, port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A plain TCP connection to the cluster's address, within ``timeout``
    seconds: an unreachable cluster is one line now, not ray.init's minute
    of retries."""
    target = parse_address(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} (RAY_ADDRESS): {why}"
        ) from None


def check_available(address: str | None = None) -> None:
    """What can be checked in seconds before any work: Ray is installed, and
    the cluster (``address``, else ``RAY_ADDRESS``) answers."""
    require_ray()
    address = address if address is not None else os.environ.get("RAY_ADDRESS", "")
    if address:
        check_reachable(address)


@contextlib.contextmanager
def connected(address: str | None = None) -> Iterator[bool]:
    """Ray, ready: the cluster this process is already connected to, else
    the one at ``address`` (else ``RAY_ADDRESS``), else a new local cluster.
    Yields whether it connected here; it disconnects (and stops a cluster
    it started) on the way out. Ray's logs are kept off the terminal."""
    ray = require_ray()
    if ray.is_initialized():
        yield False
        return
    address = address if address is not None else os.environ.get("RAY_ADDRESS", "")
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        check_reachable(address)
        kwargs["address"] = address
    if not address or address == "local":
        kwargs["include_dashboard"] = False
    try:
        with _quiet_logs():
            ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, a version mismatch, a bad address...
        with contextlib.suppress(Exception):
            ray.shutdown()
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise ClusterError(f"cannot connect to {where}: {first_line(exc)}") from None
    try:
        with _no_raylet_notices():
            yield True
    finally:
        with contextlib.suppress(Exception), _quiet_logs():
            ray.shutdown()


@contextlib.contextmanager
def _no_raylet_notices() -> Iterator[None]:
    """While this process is the driver msearch connected: the raylet's
    notices (a worker died, with advice on the OOM killer) are not printed
    on stdout by Ray's listener thread; the failure reaches the user as
    one ``ClusterError`` line. (A private hook of Ray's, pinned at 2.60;
    without it the notices print.)"""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        yield
        return
    real = getattr(ray_worker, "print_to_stdstream", None)
    if real is None:
        yield
        return

    def filtered(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            real(data, ignore_prefix)

    ray_worker.print_to_stdstream = filtered
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = real


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Ray's and Ray Data's notices (token set-up, progress, "execution
    finished") stay off stderr: msearch prints its own summary."""
    loggers = [logging.getLogger(n) for n in ("ray", "ray.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)  # failures reach the user as ClusterError
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def first_line(exc: BaseException) -> str:
    """The innermost cause of a Ray error, as ``Type: first line``: what
    went wrong in the worker, not Ray's wrapping of it."""
    seen = 0
    while seen < 8:
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc, seen = inner, seen + 1
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if isinstance(exc, MsearchError):
        return line
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


# ------------------------------------------------------------ the model on workers


class WorkerModel(Protocol):
    """How workers get the driver's model (pickled to them): a token
    counter for chunking, and an embedder for the actors."""

    def counter(self) -> TokenCounter: ...

    def embedder(self, device: str, threads: int) -> Embedder:
        """The model on ``device`` ("cpu" or "cuda"); on a CPU, computing
        on ``threads`` threads. Built once per actor."""
        ...


@dataclass(frozen=True)
class ModelOnWorker:
    """The driver's ``Model``, built again on a worker from its folder: the
    same folder path must exist there (shared storage, or the same install
    for the bundled model). Precision and prompts are the driver's (the
    index records them), never re-resolved."""

    name: str
    source: str
    folder: Path
    precision: str
    trust_remote_code: bool
    record: Any  # ModelRecord: adopted, so the worker never hashes the weights

    def _model(self, device: str) -> Any:
        from msearch.encoders import Model

        if not self.folder.is_dir():
            raise ClusterError(
                f"the model folder {self.folder} is not there on {_node()}{SHARED_HINT}"
            )
        model = Model(
            self.name,
            self.source,
            self.folder,
            device,
            self.precision,
            self.trust_remote_code,
            notice=_no_notice,
        )
        model._adopt(self.record)
        return model

    def counter(self) -> TokenCounter:
        return self._model("cpu").counter  # type: ignore[no-any-return]

    def embedder(self, device: str, threads: int) -> Embedder:
        if device == "cpu":
            import torch

            torch.set_num_threads(max(1, threads))
        # Every parcel embedded as `msearch index` embeds a window (torch,
        # never the small-job numpy path): the same vectors either way.
        embedder = self._model(device).passage_encoder()
        embedder.encode(["warm up"])  # torch and the weights load now, not in the first parcel
        return embedder


@dataclass(frozen=True)
class ShippedEmbedder:
    """Any other embedder, pickled to the workers as it is (a test's fake)."""

    inner: Any

    def counter(self) -> TokenCounter:
        return self.inner.counter  # type: ignore[no-any-return]

    def embedder(self, device: str, threads: int) -> Embedder:
        return self.inner  # type: ignore[no-any-return]


def _no_notice(_msg: str) -> None:
    pass


def worker_model(embedder: Embedder) -> WorkerModel:
    """How the workers get ``embedder``: a ``Model`` is built again from its
    folder, anything else is pickled as it is."""
    from msearch.encoders import Model

    if isinstance(embedder, Model):
        return ModelOnWorker(
            embedder.name,
            embedder.source,
            Path(embedder.folder),
            embedder.precision,
            embedder.trust_remote_code,
            embedder.record,
        )
    return ShippedEmbedder(embedder)


# ------------------------------------------------------------ the plan


def split_blocks(sizes: Sequence[int], blocks: int) -> list[range]:
    """``blocks`` contiguous, non-empty runs of ``sizes`` (as many as there
    are items at most) with about equal byte totals."""
    n = len(sizes)
    blocks = max(1, min(blocks, n))
    total = sum(sizes)
    out: list[range] = []
    start, acc = 0, 0
    for i, size in enumerate(sizes):
        acc += size
        left_items, left_blocks = n - i - 1, blocks - len(out) - 1
        if left_blocks == 0:
            break
        # Cut when this run has its share of the bytes, or when every item
        # left must start a block of its own.
        if acc * blocks >= total * (len(out) + 1) or left_items == left_blocks:
            out.append(range(start, i + 1))
            start = i + 1
    out.append(range(start, n))
    return out


def split_parcels(sizes: Sequence[int], limit: int) -> list[range]:
    """The items in consecutive parcels of at most ``limit`` bytes (a larger
    file is a parcel of its own)."""
    out: list[range] = []
    start, acc = 0, 0
    for i, size in enumerate(sizes):
        if i > start and acc + size > limit:
            out.append(range(start, i))
            start, acc = i, 0
        acc += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


@dataclass
class Plan:
    """Workers, blocks (segments) and parcels (units of work) of one run."""

    gpu: bool
    workers: int
    actor_cpus: float
    threads: int
    blocks: list[range]
    parcels: list[tuple[int, range]]  # (block, files)


def plan_work(
    sizes: Sequence[int],
    resources: dict[str, float],
    device: str = "auto",
    workers: int | None = None,
) -> Plan:
    """Where and how to split the work (files of ``sizes`` bytes, in walk
    order), from the cluster's resources: parcels of at most a worker's
    quarter share (within PARCEL_MIN_BYTES and the cap), as many actors as
    asked for or there are parcels, and blocks of whole parcels, at least
    one per actor."""
    cpus, gpus = float(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if device == "cuda" and not gpus:
        raise ClusterError("--device cuda: the Ray cluster has no GPUs")
    gpu = gpus > 0 and device != "cpu"
    n = workers or (gpus if gpu else max(1, int(cpus)))
    total = sum(sizes)
    cap = PARCEL_BYTES_GPU if gpu else PARCEL_BYTES_CPU
    share = math.ceil(total / (PARCELS_PER_WORKER * n))
    parcels = split_parcels(sizes, max(PARCEL_MIN_BYTES, min(cap, share)))
    n = max(1, min(n, len(parcels)))  # no actor (and model load) without work
    weights = [sum(sizes[i] for i in p) for p in parcels]
    groups = split_blocks(weights, max(n, math.ceil(total / BLOCK_BYTES)))
    blocks = [range(parcels[g.start].start, parcels[g.stop - 1].stop) for g in groups]
    per_actor = cpus / n if cpus else 1.0
    return Plan(
        gpu=gpu,
        workers=n,
        actor_cpus=1.0 if gpu else max(0.5, per_actor - CHUNK_CPUS),
        threads=max(1, round(per_actor)),
        blocks=blocks,
        parcels=[(b, parcels[i]) for b, g in enumerate(groups) for i in g],
    )


# ------------------------------------------------------------ on the workers

_COUNTERS: dict[str, TokenCounter] = {}


def _counter(token: str, model: WorkerModel) -> TokenCounter:
    """The token counter, built once per worker process and run."""
    if token not in _COUNTERS:
        _COUNTERS.clear()
        _COUNTERS[token] = model.counter()
    return _COUNTERS[token]


PARCEL_FIELDS = ("ok", "counts", "lens", "rows", "keys", "text", "extra")
SHARED_HINT = " (--ray needs the folder and the model at the same path on every node)"


def _node() -> str:
    """This Ray worker's node, for messages."""
    try:
        import ray

        return f"Ray node {ray.util.get_node_ip_address()}"
    except Exception:
        return "a Ray node"


def read_and_chunk(
    batch: dict[str, np.ndarray],
    model: WorkerModel,
    root: str,
    walk_options: WalkOptions,
    settings: ChunkSettings,
    salt: bytes,
    token: str,
) -> dict[str, np.ndarray]:
    """Ray Data task: parcels of file paths to their passages, chunked as
    ``msearch index`` chunks (a file unreadable by now: no passages, ``ok``
    0). Each output row packs a parcel's arrays as bytes. What goes wrong
    is said in the row's ``error`` (Ray would keep only its traceback)."""
    out: dict[str, list[Any]] = {k: [] for k in (*PARCEL_FIELDS, "error")}
    for paths in batch["paths"]:
        try:
            # A node that does not see the folder would find every file
            # "vanished" and index it as empty: say so instead.
            if not os.path.isdir(root):
                raise ClusterError(f"{root} is not there on {_node()}{SHARED_HINT}")
            counter = _counter(token, model)
            names = [os.fsdecode(p) for p in bytes(paths).split(b"\0")]
            texts = [file_text(Path(name), walk_options) for name in names]
            rels = [os.path.relpath(name, root).replace(os.sep, "/") for name in names]
            chunked = chunker_for(counter, settings).chunk(
                [(rel, t or "") for rel, t in zip(rels, texts, strict=True)]
            )
            arrays = [passage_arrays(passages, salt) for passages in chunked]
            extra = {
                "contexts": [p.context for ps in chunked for p in ps],
                "symbols": [list(p.symbols) for ps in chunked for p in ps],
            }
            parcel = {
                "ok": np.array([t is not None for t in texts], np.uint8).tobytes(),
                "counts": np.array([len(a[2]) for a in arrays], np.int64).tobytes(),
                "lens": np.array([len(t or "") for t in texts], np.int64).tobytes(),
                "rows": b"".join(a[0].tobytes() for a in arrays),
                "keys": b"".join(a[1].tobytes() for a in arrays),
                "text": "".join(t or "" for t in texts).encode("utf-8", "surrogatepass"),
                "extra": json.dumps(extra).encode("utf-8", "surrogatepass"),
                "error": "",
            }
        except Exception as exc:
            parcel = {**dict.fromkeys(PARCEL_FIELDS, b""), "error": first_line(exc)}
        for key, value in parcel.items():
            out[key].append(value)
    result = {k: _objects(v) for k, v in out.items()}
    result["block"], result["first"] = batch["block"], batch["first"]
    return result


def unpack_parcel(
    parcel: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[tuple[str, ...]]]:
    """What :func:`read_and_chunk` packed: each file's passage count, the
    passages' rows and keys, each passage's text as it is embedded and
    indexed (its context, then the text at its offsets into its file's
    text; the parcel holds the files' texts one after another), and the
    symbols each defines. Arrays that disagree are a ``ClusterError``."""
    counts = np.frombuffer(parcel["counts"], np.int64)
    lens = np.frombuffer(parcel["lens"], np.int64)
    rows = np.frombuffer(parcel["rows"], np.int32).reshape(-1, 4)
    keys = np.frombuffer(parcel["keys"], np.uint8).reshape(-1, KEY_BYTES)
    if (
        len(counts) != len(lens)
        or (counts < 0).any()
        or int(counts.sum()) != len(rows)
        or len(keys) != len(rows)
    ):
        raise ClusterError("a Ray worker returned a malformed parcel; the index is unchanged")
    text = bytes(parcel["text"]).decode("utf-8", "surrogatepass")
    starts = np.repeat(np.cumsum(lens) - lens, counts)  # each passage's file's start
    try:
        extra = json.loads(bytes(parcel["extra"]).decode("utf-8", "surrogatepass"))
        contexts, symbols = extra["contexts"], extra["symbols"]
        if (
            len(contexts) != len(rows)
            or len(symbols) != len(rows)
            or not all(isinstance(c, str) for c in contexts)
            or not all(isinstance(x, list) and all(isinstance(n, str) for n in x) for x in symbols)
        ):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ClusterError(
            "a Ray worker returned a malformed parcel; the index is unchanged"
        ) from None
    texts = [
        (f"{ctx}\n" if ctx else "") + text[int(base) + int(s) : int(base) + int(e)]
        for (s, e), base, ctx in zip(rows[:, 2:4], starts, contexts, strict=True)
    ]
    return counts, rows, keys, texts, [tuple(x) for x in symbols]


def _objects(items: list[Any]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


class EmbedActor:
    """Ray Data actor: embeds the passages of each parcel whose key is not in
    the reuse pool; builds the model once. A model that cannot be built
    here (its folder missing on this node) is said in each row's ``error``."""

    def __init__(
        self, model: WorkerModel, pool: list[Any], device: str, threads: int, batch_size: int | None
    ) -> None:
        import ray

        self.pool: frozenset[bytes] = ray.get(pool[0])  # in a list: Ray leaves it a reference
        self.batch_size = batch_size
        self.name = ray.get_runtime_context().get_actor_id() or f"pid {os.getpid()}"
        self.embedder: Embedder | None = None
        self.broken = ""
        t = time.perf_counter()
        try:
            self.embedder = model.embedder(device, threads)
        except Exception as exc:
            self.broken = first_line(exc)
        self.load_seconds = time.perf_counter() - t  # said once, with the first parcel

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors, seconds, errors = [], [], []
        for i in range(len(batch["block"])):
            t = time.perf_counter()
            error, vecs = str(batch["error"][i]) or self.broken, b""
            if not error:
                try:
                    vecs = self._embed(batch, i)
                except Exception as exc:
                    error = first_line(exc)
            seconds.append(time.perf_counter() - t)
            vectors.append(vecs)
            errors.append(error)
        out = dict(batch)
        out["vectors"] = _objects(vectors)
        out["error"] = _objects(errors)
        out["seconds"] = np.array(seconds, dtype=np.float64)
        out["load"] = np.array([self.load_seconds] + [0.0] * (len(seconds) - 1))
        out["worker"] = _objects([self.name] * len(seconds))
        self.load_seconds = 0.0
        return out

    def _embed(self, batch: dict[str, np.ndarray], i: int) -> bytes:
        """The vectors of parcel ``i``'s passages that are not in the pool."""
        assert self.embedder is not None
        _, _, keys, passages, _ = unpack_parcel({k: batch[k][i] for k in PARCEL_FIELDS})
        texts = [t for t, key in zip(passages, keys, strict=True) if key.tobytes() not in self.pool]
        if not texts:
            return b""
        vecs = embed_async(self.embedder, texts, self.batch_size)()
        return np.ascontiguousarray(vecs, dtype=np.float32).tobytes()


# ------------------------------------------------------------ the driver


@dataclass
class RayReport:
    """What the last run did, for the CLI and benchmarks."""

    workers: int = 0
    gpu: bool = False
    blocks: int = 0
    parcels: int = 0
    connect_seconds: float = 0.0  # ray.init (a local cluster's start-up)
    pipeline_seconds: float = 0.0  # first parcel submitted to last one written
    write_seconds: float = 0.0  # of which the driver spent writing segments
    # actor -> [passages embedded, seconds spent embedding, seconds loading the model]
    per_worker: dict[str, list[float]] = field(default_factory=dict)

    def rate_per_worker(self) -> float:
        """Passages a second one worker embeds (mean over workers, busy time only)."""
        rates = [p / s for p, s, _ in self.per_worker.values() if s > 0]
        return sum(rates) / len(rates) if rates else 0.0

    def load_seconds(self) -> float:
        """How long an actor took to load the model (the slowest)."""
        return max((w[2] for w in self.per_worker.values()), default=0.0)


class RayIndexer:
    """A ``SegmentsWriter`` (see msearch.indexer.build_index) that reads,
    chunks and embeds on a Ray cluster and writes the segments here.

    ``address``: the cluster (default: ``RAY_ADDRESS``, else a new local
    one; a process already connected to Ray uses that connection).
    ``device``: "auto" (GPU actors where the cluster has GPUs), "cpu" or
    "cuda". ``workers``: how many actors (default: one per GPU, else one
    per CPU). The cluster is connected to only when there is something to
    embed, and left (a local one stopped) before the commit.
    """

    def __init__(
        self,
        address: str | None = None,
        device: str = "auto",
        workers: int | None = None,
        model: WorkerModel | None = None,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ClusterError(
                f"--device {device} cannot be used with --ray (use auto, cpu or cuda)"
            )
        if workers is not None and workers < 1:
            raise ClusterError("the number of Ray workers must be at least 1")
        self.address = address
        self.device = device
        self.workers = workers
        self.model = model
        self.report = RayReport()

    def __call__(self, job: WriteJob) -> list[SegmentInfo]:
        ray = require_ray()
        t0 = time.perf_counter()
        with _quiet_logs(), connected(self.address):
            try:
                self.report = RayReport(connect_seconds=time.perf_counter() - t0)
                sizes = [item.entry.size for item in job.todo]
                plan = plan_work(sizes, ray.cluster_resources(), self.device, self.workers)
                self.report.workers, self.report.gpu = plan.workers, plan.gpu
                self.report.blocks, self.report.parcels = len(plan.blocks), len(plan.parcels)
                t1 = time.perf_counter()
                infos = self._run(ray, job, plan)
                self.report.pipeline_seconds = time.perf_counter() - t1
                return infos
            except MsearchError:
                raise
            except Exception as exc:  # Ray's own errors: one line, not a traceback
                raise ClusterError(
                    f"the Ray cluster failed: {first_line(exc)}; the previous index is unchanged"
                ) from None

    def _dataset(self, ray: Any, job: WriteJob, plan: Plan) -> Any:
        model = self.model or worker_model(job.embedder)
        items = [
            {
                "block": block,
                "first": files.start,
                "paths": b"\0".join(os.fsencode(job.todo[i].entry.path) for i in files),
            }
            for block, files in plan.parcels
        ]
        pool_ref = ray.put(frozenset(job.pool))
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        with warnings.catch_warnings():
            # Retries and restarts have no named parameter in Ray 2.60 (pinned).
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            return self._stages(ray, ds, job, plan, model, pool_ref)

    def _stages(
        self, ray: Any, ds: Any, job: WriteJob, plan: Plan, model: WorkerModel, pool_ref: Any
    ) -> Any:
        ds = ds.map_batches(
            read_and_chunk,
            batch_size=1,
            num_cpus=CHUNK_CPUS,
            max_retries=TASK_RETRIES,
            fn_kwargs={
                "model": model,
                "root": str(job.root),
                "walk_options": job.walk_options,
                "settings": job.settings,
                "salt": job.salt,
                "token": uuid.uuid4().hex,
            },
        )
        return ds.map_batches(
            EmbedActor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=plan.workers),
            num_cpus=plan.actor_cpus,
            num_gpus=1 if plan.gpu else 0,
            max_restarts=0,
            fn_constructor_kwargs={
                "model": model,
                "pool": [pool_ref],
                "device": "cuda" if plan.gpu else "cpu",
                "threads": plan.threads,
                "batch_size": job.batch_size,
            },
        )

    def _run(self, ray: Any, job: WriteJob, plan: Plan) -> list[SegmentInfo]:
        from msearch.storage.disk import writing
        from msearch.storage.ownership import new_segment_dir

        ctx = ray.data.DataContext.get_current()
        saved = (
            ctx.enable_progress_bars,
            ctx.execution_options.preserve_order,
            ctx.wait_for_min_actors_s,
        )
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = True  # parcels come back in walk order
        # Ray Data waits forever by default for actors the cluster cannot
        # place (busy with other jobs, a node with fewer CPUs than GPUs):
        # silence, since its logs are off. Give up with one line instead.
        ctx.wait_for_min_actors_s = ACTOR_WAIT_SECONDS
        writers: dict[int, EmbedWindow] = {}
        infos: dict[int, SegmentInfo] = {}
        left = [0] * len(plan.blocks)
        for block, _ in plan.parcels:
            left[block] += 1
        job.progress.start(len(job.todo), sum(item.entry.size for item in job.todo))
        try:
            for row in _results(self._dataset(ray, job, plan)):
                block = int(row["block"])
                if block in infos or not 0 <= block < len(left):
                    raise ClusterError(f"the Ray pipeline returned block {block} twice")
                if block not in writers:
                    writers[block] = EmbedWindow(
                        SegmentWriter(
                            new_segment_dir(job.index_dir),
                            job.dim,
                            lexical=job.lexical or LexicalParams.default(),
                        ),
                        window=job.window,
                    )
                writer = writers[block]
                t = time.perf_counter()
                with writing(writer.writer.dir):
                    self._add_parcel(writer, row, job, job.position + block)
                    left[block] -= 1
                    if left[block] == 0:
                        infos[block] = writer.close()
                self.report.write_seconds += time.perf_counter() - t
            if len(infos) != len(plan.blocks):
                raise ClusterError("the Ray pipeline lost part of the work; the index is unchanged")
            return [infos[b] for b in range(len(plan.blocks))]
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        finally:
            (
                ctx.enable_progress_bars,
                ctx.execution_options.preserve_order,
                ctx.wait_for_min_actors_s,
            ) = saved

    def _add_parcel(
        self, writer: EmbedWindow, row: dict[str, Any], job: WriteJob, pos: int
    ) -> None:
        """One parcel's files into ``writer``, in order: passages, keys and
        fresh vectors from the workers, reused vectors from the pool."""
        ok = np.frombuffer(row["ok"], np.uint8)
        counts, rows, keys, texts, symbols = unpack_parcel(row)
        if len(counts) != len(ok):
            raise ClusterError("a Ray worker returned a malformed parcel; the index is unchanged")
        fresh = np.frombuffer(row["vectors"], np.float32)
        if fresh.size % job.dim or not np.isfinite(fresh).all():
            raise ClusterError(
                "a Ray worker returned vectors of another size or invalid numbers (another "
                f"model at the same path on its node?){SHARED_HINT}; the previous index is unchanged"
            )
        fresh = fresh.reshape(-1, job.dim) if fresh.size else np.zeros((0, job.dim), np.float32)
        first = int(row["first"])
        p = v = 0
        nbytes = 0
        for j, (readable, count) in enumerate(zip(ok, counts.tolist(), strict=True)):
            item: Embed = job.todo[first + j]
            if not readable:
                if file_text(item.entry.path, job.walk_options) is not None:
                    # This machine reads it: the worker's node does not (not
                    # mounted there, another owner). Indexing it as empty
                    # would drop its passages until a later run.
                    raise ClusterError(
                        f"{item.entry.path} could not be read on a Ray worker{SHARED_HINT}; "
                        "the previous index is unchanged"
                    )
                mark_unread(item.record)  # gone or changed for everyone: as one process does
            try:
                v += add_rows(
                    writer,
                    item,
                    rows[p : p + count],
                    keys[p : p + count],
                    texts[p : p + count],
                    job.pool,
                    job.stats,
                    pos,
                    fresh[v:],
                    symbols[p : p + count],
                )
            except IndexError:
                v = len(fresh) + 1  # fewer vectors than passages: said below
                break
            p += count
            nbytes += item.entry.size
        if v != len(fresh):
            raise ClusterError(
                "a Ray worker returned a vector count that does not match the passages; "
                "the index is unchanged"
            )
        job.stats.embedded += v
        per = self.report.per_worker.setdefault(str(row["worker"]), [0.0, 0.0, 0.0])
        per[0] += v
        per[1] += float(row["seconds"])
        per[2] += float(row["load"])
        job.progress.advance(len(ok), nbytes, v)


def _results(ds: Any) -> Iterator[dict[str, Any]]:
    """The pipeline's rows; a failure on the cluster (an error a worker
    reports, a worker gone) is one ``ClusterError`` line, and stops it."""
    it = iter(ds.iter_rows())
    try:
        while True:
            try:
                row = next(it)
            except StopIteration:
                return
            except Exception as exc:
                error = first_line(exc)
            else:
                error = str(row["error"])
            if error:
                raise ClusterError(
                    f"a Ray worker failed: {error}; the previous index is unchanged"
                ) from None
            yield row
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def describe(report: RayReport, callback: Callable[[str], None]) -> None:
    """One line on how the last run used the cluster."""
    if not report.workers:
        return
    kind = "GPU" if report.gpu else "CPU"
    rate = report.rate_per_worker()
    callback(
        f"msearch: on Ray: {report.workers} {kind} worker{'s' if report.workers > 1 else ''}, "
        f"{report.blocks} segment{'s' if report.blocks > 1 else ''}"
        + (f", {rate:.1f} passages/s per worker" if rate else "")
    )
