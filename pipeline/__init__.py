"""LinCIR: zero-shot composed image retrieval trained on language only, as a library.

One module per concept; `stages/` holds the thin DVC entry points that call it.
"""
