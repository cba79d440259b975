"""Benchmarks, every metric, composed queries, gallery embeddings and their FAISS indexes,
the latent geometry, and pictures of results."""
