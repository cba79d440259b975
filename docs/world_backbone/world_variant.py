"""A world for the backbone study (docs/world_backbone.md): the world stage's generator with params.yaml's
`world` section, some of it overridden, and optionally clutter whose colour captions may name.

  python docs/world_backbone/world_variant.py OUT [--train-images N] [--mismatched-captions P]
      [--mention-clutter P] [--clutter-colours P] [--mention FIELD=P ...]

--mismatched-captions: the share of training images whose captions belong to another image (0.1 in
the default world); --mention-clutter: how often a caption mentions the clutter (captions.py MENTION, 0.3 in the default
world); --mention: how often a caption names each given attribute (captions.py MENTION, e.g. colour=0.6);
--clutter-colours: each clutter item gets an object colour of its own draw, and a caption that
mentions the clutter names one item with its colour this often ("next to a red ring").
"""
import argparse
import sys
from pathlib import Path

import yaml

sys.path[:0] = ["."]
import pipeline.data.world as world  # noqa: E402
import pipeline.data.world.captions as captions  # noqa: E402
import pipeline.data.world.render as render  # noqa: E402
from pipeline.data.world.attributes import CLUTTER, COLOURS, MAX_CLUTTER  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("out", type=Path)
p.add_argument("--train-images", type=int)
p.add_argument("--mismatched-captions", type=float)
p.add_argument("--mention-clutter", type=float)
p.add_argument("--clutter-colours", type=float)
p.add_argument("--mention", nargs="+", default=[], metavar="FIELD=P")
args = p.parse_args()

if args.mention_clutter is not None:  # the older spelling of --mention clutter=P
    args.mention.append(f"clutter={args.mention_clutter}")
for item in args.mention:
    field, _, share = item.partition("=")
    if field not in captions.MENTION:
        p.error(f"--mention {item}: {field!r} is none of {sorted(captions.MENTION)}")
    try:
        value = float(share)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        p.error(f"--mention {item}: give FIELD=P with P a share between 0 and 1")
    captions.MENTION[field] = value
if args.clutter_colours is not None:
    plain_clutter_drawing = render._clutter

    def sample_clutter(rng, n):  # items "kind:colour"
        return [tuple(sorted(f"{k}:{c}" for k, c in zip(rng.choice(CLUTTER, size=m).tolist(),
                                                        rng.choice(list(COLOURS), size=m).tolist())))
                for m in rng.integers(MAX_CLUTTER + 1, size=n)]

    def draw_clutter(draw, item, big, rng):
        kind, colour = item.split(":")
        every = dict(COLOURS)
        COLOURS.clear()
        COLOURS[colour] = every[colour]  # the drawing's colour draw then picks this one
        try:
            plain_clutter_drawing(draw, kind, big, rng)
        finally:
            COLOURS.clear()
            COLOURS.update(every)

    def clutter_caption(rng, clutter):
        kind, colour = clutter[rng.integers(len(clutter))].split(":")
        word = captions.say(rng, kind)
        if rng.random() < args.clutter_colours:
            return f"next to {captions.article(colour + ' ' + word)}"
        n = sum(item.startswith(kind + ":") for item in clutter)
        if n > 1 and rng.random() < 0.4:
            return f"among some {word}s"
        return f"next to {captions.COUNTS[n]} {word}{'s' if n > 1 else ''}"

    world.sample_clutter, render._clutter, captions._clutter = sample_clutter, draw_clutter, clutter_caption

params = yaml.safe_load(open("params.yaml"))["world"]
if args.train_images:
    params["train_images"] = args.train_images
if args.mismatched_captions is not None:
    params["mismatched_captions"] = args.mismatched_captions
print(world.generate(world.WorldConfig(**params), args.out))
