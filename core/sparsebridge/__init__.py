"""sparsebridge: learned sparse vectors in and out of the search engines you already run."""

__version__ = "0.1.0"

from .dense_encoder import DenseEncoder  # noqa: E402
from .encoder import SparseEncoder  # noqa: E402
from .similarity import SimilarityFunction  # noqa: E402

__all__ = ["DenseEncoder", "SimilarityFunction", "SparseEncoder", "__version__"]
