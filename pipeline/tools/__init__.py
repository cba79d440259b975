"""The `lincir` command line and what it runs beside the pipeline: scoring, submission files,
the ablation grid, search, speed benchmarks, the CAM check."""
