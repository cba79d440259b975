"""The placeholder token whose embedding phi's output replaces. Ingestion strips it from
every caption (pipeline/data/ingest.py), so the only placeholders are the ones masking puts in."""

PLACEHOLDER = "$"
