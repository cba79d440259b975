"""Data preparation: the built-in world, caption ingestion, spaCy keywords, masking, token arrays,
image-caption pairs and image files."""
