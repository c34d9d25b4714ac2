"""The faithlens version (kept in step with pyproject.toml; tests/architecture/test_layers.py checks)."""

__version__ = "0.1.0"
