"""What every stage shares: errors, params, registries, Parquet streaming, worker pools and
the placeholder token. Every stage in dvc.yaml lists this folder as a dependency, so
a change here re-runs everything; keep it small."""
