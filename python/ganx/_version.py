"""The version of ganx (pyproject.toml's), importable without loading the package."""
__version__ = "0.1.0"
