"""Discovery of what the engine does not know by name: the method packages (`baselines`, every paper package
under `methods/`) are imported by name, so their registrations (methods, papers, datasets, model families) run.
`bench/` never imports them statically."""
from __future__ import annotations

import functools
import importlib
import pkgutil

PLUGIN_PACKAGES = ("baselines", "methods")


@functools.lru_cache(maxsize=1)
def load_plugins() -> None:
    """Import every module of `baselines` and every package/module directly under `methods` (once)."""
    for pkg_name in PLUGIN_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg_name}.{info.name}")
