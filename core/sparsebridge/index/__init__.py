"""The way of a document into an index and back: read (``corpus``), prepare (``documents``,
``passages``), the ``Pipeline`` (write path, search, evaluation), ``transfer`` (export, migrate) and
the Ray engine (``ray_engine``). Above the config, the vectors and the connector contract.
"""
