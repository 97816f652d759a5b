"""sparsebridge: learned sparse vectors in and out of the search engines you already run."""

__version__ = "0.1.0"
