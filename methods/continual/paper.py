"""The image continual-learning arms are the context-free paper's "image-classification cousins" (its card); they
report through the generic tables, so this package registers no paper of its own."""
