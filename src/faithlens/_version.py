"""The faithlens version (kept in step with pyproject.toml; tests/test_architecture.py checks)."""

__version__ = "0.1.0"
