"""The package version, in a module of its own so that any layer can read it without importing the
package facade (``sparsebridge/__init__.py``), which names the encoders."""

__version__ = "0.1.0"
