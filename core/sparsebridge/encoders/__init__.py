"""The models, with sentence-transformers' API: ``SparseEncoder``, ``DenseEncoder``, their modules
(``modules/``), inference backends (``backends/``) and the runtime they run on (``runtime/``:
precision, threads, placement, weights loading, adapters). Everything here may import torch.
"""
