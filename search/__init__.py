"""The embedding space (open_clip), the on-disk per-site FAISS index, and queries with score fusion."""
