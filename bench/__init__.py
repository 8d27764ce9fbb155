"""forgetbench engine: spec -> runs -> executor -> results store."""
__version__ = "0.1.0"
