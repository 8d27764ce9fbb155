"""Fetch a dataset archive (any URL urllib opens, file:// included), check its md5, extract it safely.

Nothing here runs unless a spec sets `dataset.download: true`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from filelock import FileLock

from bench.paths import cache_root


class DownloadError(RuntimeError):
    """A download that failed or whose md5 did not match."""


def download_root() -> Path:
    """Where downloads go when the spec names no `dataset.root`: $FORGETBENCH_DOWNLOADS, else next to the cache."""
    env = os.environ.get("FORGETBENCH_DOWNLOADS")
    return Path(env) if env else cache_root().parent / "downloads"


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_url(url: str, dest: Path, md5: str | None = None, *, timeout: float = 60.0) -> Path:
    """Download `url` to file `dest` (skipped if it already exists with the right md5).

    Written to `dest.part` first; the md5 is checked before the atomic rename, a mismatch deletes the partial
    file and raises DownloadError naming the url and both digests.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if dest.is_file() and (md5 is None or file_md5(dest) == md5):
            return dest
        part = dest.with_name(dest.name + ".part")
        h = hashlib.md5()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                while block := resp.read(1 << 20):
                    h.update(block)
                    out.write(block)
        except OSError as e:  # URLError is an OSError
            part.unlink(missing_ok=True)
            raise DownloadError(f"download of {url} failed: {e}") from e
        got = h.hexdigest()
        if md5 is not None and got != md5:
            part.unlink(missing_ok=True)
            raise DownloadError(f"md5 mismatch for {url}: expected {md5}, got {got} (file discarded)")
        os.replace(part, dest)
    return dest


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into `dest`, refusing members that would land outside it."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for name in zf.namelist():
                target = (dest / name).resolve()
                if root != target and root not in target.parents:
                    raise DownloadError(f"{archive}: member {name!r} would extract outside {dest}")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                root = dest.resolve()
                for m in tf.getmembers():
                    target = (dest / m.name).resolve()
                    if (root != target and root not in target.parents) or m.issym() or m.islnk():
                        raise DownloadError(f"{archive}: unsafe member {m.name!r}")
                tf.extractall(dest)
    else:
        raise DownloadError(f"{archive} is neither a tar nor a zip archive")
    return dest


def download_and_extract(url: str, download_dir: Path, *, md5: str | None, filename: str | None = None,
                         extract_dir: Path | None = None, remove_archive: bool = False) -> Path:
    """Download `url` into `download_dir` (md5-checked) and extract it into `extract_dir` (default: same dir).

    Extraction goes through a temporary folder renamed into place member by member, so a crash never leaves
    a half-extracted dataset folder where a later run would take it for a complete one.
    """
    download_dir = Path(download_dir)
    extract_dir = Path(extract_dir) if extract_dir is not None else download_dir
    archive = download_url(url, download_dir / (filename or url.rstrip("/").rsplit("/", 1)[-1]), md5)
    extract_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(archive) + ".extract.lock"):
        tmp = extract_dir / f".extract-{archive.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            extract_archive(archive, tmp)
            for entry in sorted(tmp.iterdir()):
                target = extract_dir / entry.name
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                os.replace(entry, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if remove_archive:
        archive.unlink(missing_ok=True)
    return extract_dir
