"""The PNG grids: a result's label (lincir search --grid: rank, score, path) is written under it."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.evaluation.visualize import CELL, LABEL_LINE, TEXT_W, Row, draw_grid, fit


def test_labels_are_written_under_each_result(tmp_path):
    picture = Image.new("RGB", (CELL - 8, CELL - 8), "white")
    labels = ("1. score 0.8123\nstar/red_0.png", "2. score 0.7001\nsquare/blue_3.png", "")
    draw_grid([Row(None, "is red", [(picture, False)] * 3, labels)], 3, "title", tmp_path / "grid.png")
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    assert grid.shape == (28 + CELL + 2 * LABEL_LINE, CELL + TEXT_W + 3 * CELL)
    band = grid[28 + CELL:]
    inked = [(band[:, CELL + TEXT_W + c * CELL:CELL + TEXT_W + (c + 1) * CELL] < 128).sum() for c in range(3)]
    assert inked[0] > 20 and inked[1] > 20 and inked[2] == 0  # the third result has no label
    draw_grid([Row(None, "is red", [(picture, True)])], 1, "no labels, no band", tmp_path / "plain.png")
    assert Image.open(tmp_path / "plain.png").size[1] == 28 + CELL


def test_a_long_path_keeps_its_end():
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = ImageFont.load_default(size=11)
    cut = fit("holidays/2023/summer/very/deep/folder/IMG_0042.jpg", 104, font, draw)
    assert cut.startswith("…") and cut.endswith("IMG_0042.jpg") and draw.textlength(cut, font=font) <= 104
    assert fit("a.png", 104, font, draw) == "a.png"
