"""Image continual-learning arms (sequential fine-tuning, experience replay, LwF) for the replay study.

Importing the package registers its methods, datasets, model families and paper metadata."""
import methods.continual.image_replay  # noqa: F401
import methods.continual.paper  # noqa: F401
