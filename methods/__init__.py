"""One package per paper: its methods, the engine pieces only it uses, and its `paper.py` (metadata, reference
rows, claims, tables and figures). `bench.plugins.load_plugins` imports every package here."""
