"""msearch: semantic search over local text files.

The package is a library first; :mod:`msearch.cli` is a thin layer on top.
Importing it is cheap: heavy libraries (torch, sentence-transformers,
onnxruntime) are imported only inside the functions that need them.
"""

__version__ = "0.1.0"
