"""KNOW / KNOWN (Jang, Kim, Kim 2025): trajectory stage, KNOWN hyper-model and kernel, transfer methods, meta-training.

Importing the package registers its methods, datasets, model families and paper metadata."""
import methods.know.transfer  # noqa: F401
import methods.know.known_train  # noqa: F401
import methods.know.paper  # noqa: F401
