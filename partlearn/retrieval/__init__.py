"""Image retrieval over global descriptors: faiss search, average precision and the
revisited-Oxford protocols, category-level retrieval, query expansion and diffusion."""

from ._rerank import diffusion, query_expansion
from ._search import average_precision, category_retrieval, instance_map, search

__all__ = ["average_precision", "category_retrieval", "diffusion", "instance_map",
           "query_expansion", "search"]
