"""LinCIR: zero-shot composed image retrieval trained on language only, as a library.

One module per concept; `stages/` holds the thin DVC entry points that call it.
"""
from pipeline.core.exact import pin_environment

pin_environment()  # first thing in every process of the project, before torch computes anything
