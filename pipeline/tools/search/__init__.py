"""Composed search over your own images: `lincir index` embeds a folder into a FAISS index
(index.py), `lincir search` answers "this image, but ..." from it (query.py), `lincir serve`
puts a web page on top (serve.py). The commands themselves are in commands.py."""
