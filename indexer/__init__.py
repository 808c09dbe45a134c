"""Unsupervised object segmentation from DINO spatio-temporal attention, and the indexing pipeline."""
