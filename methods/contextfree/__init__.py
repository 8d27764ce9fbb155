"""Context-free synthetic data (Bansal, Sanghavi 2025): text corpora, language models, replay / KL arms.

Importing the package registers its methods, datasets, model families and paper metadata."""
import methods.contextfree.text_data  # noqa: F401
import methods.contextfree.lm  # noqa: F401
import methods.contextfree.model_checks  # noqa: F401
import methods.contextfree.replay_kl  # noqa: F401
import methods.contextfree.paper  # noqa: F401
