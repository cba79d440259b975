"""The error type for bad input and bad params: stages print its message and exit 1,
never a traceback (pipeline/core/stage.py)."""


class PipelineError(ValueError):
    pass
