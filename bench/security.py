"""No code from data: the switches and checks that keep inputs (specs, results stores, model folders, caches)
from running code.

- Remote code of a model folder (Hugging Face `trust_remote_code`) runs only when the user typed
  `forgetbench run --trust-remote-code`: the command line sets TRUST_REMOTE_CODE_ENV for this process and its
  workers, and clears it otherwise (an exported variable alone does not count).
- A cached native library (e.g. a compiled kernel) is loaded only when it and its folder are owned by the current
  user and not group/world writable, and its sha256 equals the hash recorded (atomically, in a private sidecar
  file `<name>.sha256`) when it was built.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from bench.store import atomic_write_bytes

TRUST_REMOTE_CODE_ENV = "FORGETBENCH_TRUST_REMOTE_CODE"
TRUST_REMOTE_CODE_FLAG = "--trust-remote-code"


def set_remote_code(allowed: bool) -> None:
    """Called by the command line: remote code is allowed exactly when the user passed the flag."""
    if allowed:
        os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    else:
        os.environ.pop(TRUST_REMOTE_CODE_ENV, None)


def remote_code_allowed() -> bool:
    return os.environ.get(TRUST_REMOTE_CODE_ENV) == "1"


# ---------------------------------------------------------------------------------------- cached binaries
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_sidecar(path: Path) -> Path:
    return Path(str(path) + ".sha256")


def record_hash(path: Path) -> str:
    """Write `path`'s sha256 next to it (atomically, owner-only permissions); return the hash."""
    digest = sha256_file(path)
    side = hash_sidecar(path)
    atomic_write_bytes(side, (digest + "\n").encode())
    os.chmod(side, 0o600)
    return digest


def _not_private(what: str, st: os.stat_result) -> str | None:
    uid = os.getuid()
    if st.st_uid != uid:
        return f"{what} is owned by uid {st.st_uid}, not by this user ({uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def unsafe_folder_reason(folder: Path) -> str | None:
    """Why files in `folder` could be swapped by someone else (not ours, or group/world writable), or None."""
    try:
        st = os.stat(folder)
    except OSError as e:
        return f"folder {folder} is unusable ({e.strerror})"
    return _not_private(f"folder {folder}", st)


def untrusted_reason(path: Path) -> str | None:
    """Why the cached file at `path` must not be loaded (None when it may): not a regular file, not owned by
    this user, writable by group or others, no private recorded hash, or a hash mismatch. (Check the folder
    with `unsafe_folder_reason`.)"""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"{path.name} is missing ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path.name} is not a regular file"
    problem = _not_private(path.name, st)
    if problem:
        return problem
    side = hash_sidecar(path)
    try:
        sst = os.lstat(side)
        recorded = side.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return f"{side.name} (the hash recorded at build) is missing or unreadable"
    if not stat.S_ISREG(sst.st_mode) or _not_private(side.name, sst):
        return f"{side.name} is not a private file of this user"
    actual = sha256_file(path)
    if actual != recorded:
        return f"{path.name} has sha256 {actual[:12]}..., the build recorded {recorded[:12]}..."
    return None
