"""Identity and hashing (a leaf module): canonical JSON, run ids and stage digests."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from bench.config import RunConfig, to_dict


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces: equal configs give equal strings (and hashes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, n: int = 12) -> str:
    """The first `n` hex digits of the sha256 of `obj`'s canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def run_id(run: RunConfig) -> str:
    """Stable id: hash of the canonical resolved config (the spec name excluded, so a run is the same anywhere)."""
    d = to_dict(run)
    d.pop("spec")
    return digest(d)
