"""Decoded datasets cached as one .pt file of uint8 tensors, keyed by a hash of the source files.

Key: `<kind>-<fingerprint[:20]>-v<CACHE_VERSION>.pt` under `cache_root()` (or an explicit folder). The fingerprint
is the sha256 of an archive (memoised per path+size+mtime so a second load does not re-hash it), or a sha256 of
file names+sizes+mtimes for a folder. Writes go to a temp file renamed into place (atomic) under a FileLock, so
concurrent processes neither corrupt the file nor decode the same dataset twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from filelock import FileLock

from bench.paths import cache_root

CACHE_VERSION = 1


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def sha256_file(path: Path, *, memo_dir: Path | None = None) -> str:
    """sha256 of a file; memoised in `memo_dir` (default: cache_root()/sha256) by path, size and mtime."""
    path = Path(path)
    memo_dir = Path(memo_dir) if memo_dir is not None else cache_root() / "sha256"
    memo = memo_dir / (hashlib.sha256(_stat_key(path).encode()).hexdigest()[:32] + ".txt")
    try:
        text = memo.read_text().strip()
        if len(text) == 64:
            return text
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(memo, digest.encode())
    except OSError:
        pass  # the memo is an optimisation only
    return digest


def tree_fingerprint(folder: Path, files: Iterable[Path] | None = None) -> str:
    """sha256 over (relative name, size, mtime_ns) of `files` (default: every file under `folder`), sorted."""
    folder = Path(folder)
    paths = list(files) if files is not None else [p for p in folder.rglob("*") if p.is_file()]
    rows = []
    for p in paths:
        st = p.stat()
        rows.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    rows.sort()
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def text_fingerprint(*parts: Any) -> str:
    """sha256 of some identifying values (e.g. the sklearn version for built-in data)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_path(kind: str, fingerprint: str, cache_dir: Path | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    return folder / f"{kind}-{fingerprint[:20]}-v{CACHE_VERSION}.pt"


def _load(path: Path, kind: str, fingerprint: str) -> dict[str, Any] | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as e:  # truncated or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable dataset cache {path}: {e}")
        return None
    if not isinstance(payload, dict) or payload.get("_key") != [kind, fingerprint, CACHE_VERSION]:
        return None
    return payload


def cached(kind: str, fingerprint: str, build: Callable[[], dict[str, Any]],
           cache_dir: Path | None = None) -> dict[str, Any]:
    """Return the cached payload for (kind, fingerprint), building and saving it on a miss.

    `build` returns a dict of tensors and plain values (str/int/float/list/None). If the cache folder cannot
    be written the payload is built and returned uncached, with a warning.
    """
    path = cache_path(kind, fingerprint, cache_dir)
    hit = _load(path, kind, fingerprint) if path.is_file() else None
    if hit is not None:
        return hit
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as e:
        warnings.warn(f"dataset cache {path.parent} is not writable ({e}); decoding without caching")
        return build()
    try:
        hit = _load(path, kind, fingerprint) if path.is_file() else None  # another process may have won
        if hit is not None:
            return hit
        payload = dict(build())
        payload["_key"] = [kind, fingerprint, CACHE_VERSION]
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
            os.close(fd)
            torch.save(payload, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
            os.replace(tmp, path)
        except OSError as e:  # e.g. disk full: the data is still good, only the cache is lost
            warnings.warn(f"could not write dataset cache {path}: {e}")
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return payload
    finally:
        lock.release()
