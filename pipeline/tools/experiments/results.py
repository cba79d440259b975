"""RESULTS.md and its picture: the ablation grid on the world beside the papers' numbers, and
every paper number the project quotes, each with its table and metric (the one place they are
written; docs point here).

Whether an ordering holds is computed (each value against its group's first, with a paired
interval, beside the paper's difference: stats.py); why it does or does not is for a person to write, in docs/results_discussion.md,
which is copied below the tables.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pipeline.core.io import atomic, write_text
from pipeline.tools.experiments.grid import GROUPS, METRICS
from pipeline.tools.experiments.stats import DRAWS, FLOOR, LEVEL, at_floor, paired_difference

KEYS = [(bench, metric) for _, bench, metric in METRICS]

# LinCIR (arXiv 2312.01998), its main tables: {backbone: {method: {metric: percent}}}, metric names
# as this pipeline's benchmarks name them. ViT-L rows of Pic2Word and SEARLE are their official
# checkpoints' (Tab. 3, 6: "measured by the official checkpoint") or their papers' (Tab. 5: "from
# the original paper"); ViT-H and ViT-G rows are the LinCIR authors' training of each method.
TAB3_CIRCO = {  # CIRCO test, mAP@K
    "ViT-L/14": {"pic2word": {"mAP@5": 8.72, "mAP@10": 9.51, "mAP@25": 10.64, "mAP@50": 11.29},
                 "searle": {"mAP@5": 11.68, "mAP@10": 12.73, "mAP@25": 14.33, "mAP@50": 15.12},
                 "lincir": {"mAP@5": 12.59, "mAP@10": 13.58, "mAP@25": 15.00, "mAP@50": 15.85}},
    "ViT-H/14": {"pic2word": {"mAP@5": 11.65, "mAP@10": 12.33, "mAP@25": 13.71, "mAP@50": 14.43},
                 "searle": {"mAP@5": 16.08, "mAP@10": 16.92, "mAP@25": 18.81, "mAP@50": 19.69},
                 "lincir": {"mAP@5": 17.60, "mAP@10": 18.52, "mAP@25": 20.46, "mAP@50": 21.39}},
    "ViT-G/14": {"pic2word": {"mAP@5": 5.54, "mAP@10": 5.59, "mAP@25": 6.68, "mAP@50": 7.12},
                 "searle": {"mAP@5": 13.20, "mAP@10": 13.85, "mAP@25": 15.32, "mAP@50": 16.04},
                 "lincir": {"mAP@5": 19.71, "mAP@10": 21.01, "mAP@25": 23.13, "mAP@50": 24.18}},
}
TAB4_GENECIS = {  # GeneCIS, R@K averaged over its four tasks
    "ViT-L/14": {"pic2word": {"R@1": 11.16, "R@2": 21.47, "R@3": 30.38},
                 "searle": {"R@1": 12.26, "R@2": 22.11, "R@3": 31.30},
                 "lincir": {"R@1": 12.19, "R@2": 22.76, "R@3": 32.38}},
    "ViT-H/14": {"pic2word": {"R@1": 11.89, "R@2": 22.17, "R@3": 31.94},
                 "searle": {"R@1": 13.34, "R@2": 23.72, "R@3": 32.72},
                 "lincir": {"R@1": 13.76, "R@2": 23.87, "R@3": 33.16}},
    "ViT-G/14": {"pic2word": {"R@1": 10.67, "R@2": 20.70, "R@3": 29.50},
                 "searle": {"R@1": 12.87, "R@2": 22.61, "R@3": 32.46},
                 "lincir": {"R@1": 13.66, "R@2": 24.64, "R@3": 33.54}},
}


def _fashioniq(shirt: tuple, dress: tuple, toptee: tuple, average: tuple) -> dict[str, float]:
    """(R@10, R@50) per category and their average, as Tab. 5 lists them."""
    return {f"R@{k}{'/' + c if c else ''}": v for c, pair in (("shirt", shirt), ("dress", dress), ("toptee", toptee),
                                                               ("", average)) for k, v in zip((10, 50), pair)}


TAB5_FASHIONIQ = {  # FashionIQ val, R@10 and R@50
    "ViT-L/14": {"pic2word": _fashioniq((26.20, 43.60), (20.00, 40.20), (27.90, 47.40), (24.70, 43.70)),
                 "searle": _fashioniq((26.89, 45.58), (20.48, 43.13), (29.32, 49.97), (25.56, 46.23)),
                 "lincir": _fashioniq((29.10, 46.81), (20.92, 42.44), (28.81, 50.18), (26.28, 46.49))},
    "ViT-H/14": {"pic2word": _fashioniq((36.90, 55.99), (28.01, 51.51), (40.18, 62.01), (35.03, 56.50)),
                 "searle": _fashioniq((36.46, 55.45), (28.46, 51.07), (38.81, 60.89), (34.57, 55.80)),
                 "lincir": _fashioniq((36.90, 57.75), (29.80, 52.11), (42.07, 62.52), (36.26, 57.46))},
    "ViT-G/14": {"pic2word": _fashioniq((33.17, 50.39), (25.43, 47.65), (35.24, 57.62), (31.28, 51.89)),
                 "searle": _fashioniq((36.46, 55.35), (28.16, 50.32), (39.83, 61.45), (34.81, 55.71)),
                 "lincir": _fashioniq((46.76, 65.11), (38.08, 60.88), (50.48, 71.09), (45.11, 65.69))},
}


def _cirr(*values: float) -> dict[str, float]:
    return dict(zip(("R@1", "R@5", "R@10", "subset_R@1", "subset_R@2", "subset_R@3"), values))


TAB6_CIRR = {  # CIRR test
    "ViT-L/14": {"pic2word": _cirr(23.90, 51.70, 65.30, 53.76, 74.46, 87.08),
                 "searle": _cirr(24.24, 52.48, 66.29, 53.76, 75.01, 88.19),
                 "lincir": _cirr(25.04, 53.25, 66.68, 57.11, 77.37, 88.89)},
    "ViT-H/14": {"pic2word": _cirr(32.94, 63.11, 73.86, 62.22, 81.35, 91.23),
                 "searle": _cirr(34.00, 63.98, 75.25, 64.63, 83.21, 92.77),
                 "lincir": _cirr(33.83, 63.52, 75.35, 62.43, 81.47, 92.12)},
    "ViT-G/14": {"pic2word": _cirr(30.41, 58.12, 69.23, 68.92, 85.45, 93.04),
                 "searle": _cirr(34.80, 64.07, 75.11, 68.72, 84.70, 93.23),
                 "lincir": _cirr(35.25, 64.72, 76.05, 63.35, 82.22, 91.98)},
}
# LinCIR's ablations, CIRR dev R@1 with ViT-L/14, by the grid's values
TAB7_SUPERVISION = {"photo_of": 21.65, "image_latent": 22.63, "smp": 25.66}
TAB8_MASKING = {"non_keywords": 20.59, "random_token": 22.98, "nouns": 24.95,
                "keywords_1": 23.92, "keywords_3": 24.66, "keywords_5": 25.14,  # n_keywords, masking.n 1, 3, 5
                "all_keywords": 25.66}
TAB9_NOISE = {"none": 19.76, "student_t": 23.08, "exponential": 23.51, "chi2": 23.54, "gaussian": 23.70,
              "uniform": 25.14,  # Unif(-1, 1), pipeline/model/noise.py's `uniform`
              "unif_gaussian": 25.47}
# Tab. 1: modality gap on CC3M with each noise (CIRR dev R@1 in its parentheses is Tab. 9's), ViT-L/14
TAB1_GAP = {"none": 0.81, "student_t": 0.76, "exponential": 0.76, "chi2": 0.78, "gaussian": 0.77, "uniform": 0.74,
            "unif_gaussian": 0.71}
# Masked image-text inversion (arXiv 2406.18836), ViT-L/14, from the summary of the paper (its
# only public text here): CIRR test R@1, R@5 and FashionIQ's average R@10, R@50
MASKED_INVERSION = {"cirr": {"R@1": 26.1, "R@5": 55.2}, "fashioniq": {"R@10": 23.3, "R@50": 39.5}}


@dataclass(frozen=True)
class Paper:
    """A paper column of a RESULTS.md table: where the numbers are, what they measure, {value: number}."""

    source: str
    metric: str
    values: dict[str, float]


LINCIR = "LinCIR (arXiv 2312.01998)"
PAPER: dict[str, list[Paper]] = {  # {group: its paper columns}
    "noise": [Paper(f"{LINCIR} Tab. 9", "CIRR dev R@1, ViT-L/14", TAB9_NOISE)],
    "masking": [Paper(f"{LINCIR} Tab. 8", "CIRR dev R@1, ViT-L/14", TAB8_MASKING)],
    "supervision": [Paper(f"{LINCIR} Tab. 7", "CIRR dev R@1, ViT-L/14", TAB7_SUPERVISION)],
    "method": [Paper(f"{LINCIR} Tab. 6; arXiv 2406.18836", "CIRR test R@1, ViT-L/14",
                     {**{m: v["R@1"] for m, v in TAB6_CIRR["ViT-L/14"].items()},
                      "masked_inversion": MASKED_INVERSION["cirr"]["R@1"]}),
               Paper(f"{LINCIR} Tab. 3", "CIRCO mAP@5, ViT-L/14",
                     {m: v["mAP@5"] for m, v in TAB3_CIRCO["ViT-L/14"].items()})],
}
BASELINES = ("image_only", "text_only", "image_text_average")  # training-free: no experiment varies them
DISCUSSION = Path("docs/results_discussion.md")


def _cell(stats: dict, key) -> str:
    if key not in stats:
        return "—"
    mean, std, n = stats[key]
    return f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} ± {std:.2f} (n={n})"  # one seed has no spread


def closest(papers: list[Paper], bench: str) -> Paper | None:
    """The paper column to compare a world benchmark with: the same format (CIRCO, CIRR) where the
    table has one, else its first column (the ablation tables report CIRR dev R@1 only)."""
    kind = bench.removeprefix("world_").split("_")[0].upper()
    same = [p for p in papers if p.metric.split()[0] == kind]
    return (same or papers or [None])[0]


def comparison_rows(group: str, per_query: dict, summary: dict, papers: list[Paper]) -> list[str]:
    """Each value of `group` against its first (the paper's choice): our difference with its 95 % paired
    interval and verdict, per metric, beside the paper's difference and whether the two agree."""
    g = GROUPS[group]
    values = [v for v in g.values if v in summary]
    if not values or values[0] != g.values[0]:
        return []
    ref = values[0]
    floor = {key: at_floor([s[key][0] for s in summary.values() if key in s]) for key in KEYS}
    paper_of = {key: closest(papers, key[0]) for key in KEYS}
    lines = [f"| `value` − `{ref}` | " + " | ".join(f"{b} {m}" for b, m in KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for value in values[1:]:
        cells = []
        for key in KEYS:
            diff = paired_difference(per_query.get(value, {}).get(key, {}), per_query.get(ref, {}).get(key, {}))
            paper = paper_of[key]
            if diff is None:
                cells.append("no per-query scores")
                continue
            cell = f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
            if floor[key]:
                cells.append(f"{cell}: at the floor, not judged")
                continue
            cell += f" {diff.verdict}"
            if paper and value in paper.values and ref in paper.values:
                delta = paper.values[value] - paper.values[ref]
                sign = ">" if delta > 0 else "<" if delta < 0 else "≈"
                cell += (f"; paper {delta:+.2f}: " + ("no verdict" if diff.verdict == "≈" else
                                                     "agrees" if diff.verdict == sign else "differs"))
            cells.append(cell)
        lines.append(f"| `{value}` | " + " | ".join(cells) + " |")
    return lines


def baseline_rows(keys: list[tuple[str, str]], before: int = 0, after: int = 1,
                  metrics: Path = Path("metrics/evaluate")) -> list[str]:
    """The training-free baselines' rows, from the workspace's last `dvc repro` (*.all.json):
    they do not depend on phi, so one run is every run. `before`/`after`: empty cells around
    the metrics (a label column; paper and time columns)."""
    scores = {bench: json.loads((metrics / f"{bench}.all.json").read_text())
              for bench in {b for b, _ in keys} if (metrics / f"{bench}.all.json").is_file()}
    rows = []
    for name in BASELINES:
        cells = [f"{scores[b][name][m]:.2f} (training-free)" if name in scores.get(b, {}) else "—" for b, m in keys]
        rows.append(f"| `{name}` |" + " — |" * before + " " + " | ".join(cells) + " |" + " — |" * after)
    return rows


def gap_rows(geometry: Path = Path("metrics/geometry.json")) -> list[str]:
    """Tab. 1 beside the world: the modality gap of held-out caption latents plus each noise (at
    `lincir.noise_scale`) against the images, from the workspace's last `dvc repro` (the backbone's
    property: no experiment changes it)."""
    if not geometry.is_file():
        return []
    noise = json.loads(geometry.read_text()).get("noise", {})
    lines = ["", f"Modality gap with each noise (metrics/geometry.json; paper: {LINCIR} Tab. 1, CC3M, ViT-L/14):", "",
             "| noise | world gap | share of the gap closed | E‖n‖ / E‖z_c‖ | paper gap |", "|---|---|---|---|---|"]
    for value in GROUPS["noise"].values:
        if value in noise:
            n = noise[value]
            lines.append(f"| `{value}` | {n['modality_gap']:.3f} | {100 * n['gap_closed']:.1f} % | "
                         f"{n['norm_ratio']:.2f} | {TAB1_GAP.get(value, '—')} |")
    return lines


def tables(summary: dict) -> dict[str, list[str]]:
    """{table: the groups whose rows it shows, its own first}: a group joins the table it names."""
    out: dict[str, list[str]] = {}
    for name, g in GROUPS.items():
        if name in summary:
            out.setdefault(g.table or name, []).append(name)
    return {t: sorted(members, key=lambda m: (m != t, list(GROUPS).index(m))) for t, members in
            sorted(out.items(), key=lambda item: list(GROUPS).index(item[0]))}


def write_results(summary: dict, out: Path, png: Path, commits: dict[str, list[str]] | None = None,
                  times: dict | None = None, per_query: dict | None = None) -> None:
    """per_query: {group: {value: {(bench, metric): {seed: per-query scores}}}}, for the intervals."""
    keys = KEYS
    summary = dict(sorted(summary.items(), key=lambda item: list(GROUPS).index(item[0])))  # the paper's order
    lines = ["# Results: the papers' ablations and methods on the built-in world", "",
             "Generated by `lincir ablate report` from `dvc exp show --json` (experiments run by",
             "`lincir ablate run`). Mean ± standard deviation over seeds; percent. Our numbers are the",
             "world's CIRR-format R@1 and R@50 and CIRCO-format mAP@5 (val queries, phi selected as the",
             "train params say); each paper column says which table and metric it is (all of them in",
             "pipeline/tools/experiments/results.py). Where a table has a train-stage column, it is the",
             "wall time of the train stage of each experiment on the machine that ran it (recorded by",
             "`lincir ablate run`).", "",
             "Differences are paired: seed i of a value against seed i of the group's first value, on the same",
             f"queries; the interval resamples the queries ({DRAWS} draws, the same draw for every seed), so it",
             "measures how much the query sample moves the difference; the seed-to-seed spread is the ± of the",
             f"tables. A metric whose cells all stay below {FLOOR:g} % is shown and judged on nothing.", ""]
    for table, members in tables(summary).items():
        g, papers = GROUPS[table], PAPER.get(table, [])
        labelled = any(GROUPS[m].label for m in members)
        lines += [f"## {table} (`{g.param}`; paper: {'; '.join(p.source for p in papers) or 'none'})", ""]
        for m in members:
            if commits and m in commits:
                what = f"{GROUPS[m].label}: e" if labelled and GROUPS[m].label else "E"
                lines += [f"{what}xperiments derived from commit{'s' * (len(commits[m]) > 1)} {', '.join(commits[m])}.",
                          ""]
        timed = any((times or {}).get(m) for m in members)
        lines += ["| value |" + (" phi and optimiser |" if labelled else "") + " "
                  + " | ".join(f"{b} {m}" for b, m in keys) + " |" + "".join(f" paper {p.metric} |" for p in papers)
                  + (" train stage (s) |" if timed else ""),
                  "|---|" + "---|" * (labelled + len(keys) + len(papers) + timed)]
        for value in g.values:
            for m in members:
                if value not in summary[m]:
                    continue
                own = m == table  # the paper measured the method as its authors built it: that row only
                lines.append(f"| `{value}` |" + (f" {GROUPS[m].label} |" if labelled else "") + " "
                             + " | ".join(_cell(summary[m][value], k) for k in keys) + " |"
                             + "".join(f" {p.values.get(value, '—') if own else '—'} |" for p in papers)
                             + (f" {_cell((times or {}).get(m, {}), value)} |" if timed else ""))
        if table == "method":
            lines += baseline_rows(keys, before=int(labelled), after=len(papers) + timed)
        if table == "noise":
            lines += gap_rows()
        for m in members:
            rows_ = comparison_rows(m, (per_query or {}).get(m, {}), summary[m], papers if m == table else [])
            if rows_:
                lines += ["", f"Differences{' (' + GROUPS[m].label + ')' if labelled else ''}: mean over seeds and "
                              f"queries, [{LEVEL:.0%} paired bootstrap interval], verdict (> or < where the "
                              "interval excludes 0, ≈ where it holds it); the paper's difference in its column's "
                              "metric (CIRCO-format rows against a CIRCO table where there is one):", ""] + rows_
        lines.append("")
    lines += ["![ablations](" + png.as_posix() + ")", ""]
    if DISCUSSION.is_file():
        lines += [DISCUSSION.read_text().strip(), ""]
    write_text(out, "\n".join(lines))
    draw_summary(summary, png)


def draw_summary(summary: dict, png: Path, width: int = 900) -> None:
    """One panel a group and metric: a bar a value (the mean over seeds), the std as a whisker."""
    font = ImageFont.load_default()
    bar_h, pad = 18, 8
    panels = [(g, key) for g in summary for key in KEYS]
    image = Image.new("RGB", (width, sum(40 + bar_h * len(summary[g]) for g, _ in panels) + pad), "white")
    draw = ImageDraw.Draw(image)
    y, left, right = pad, 170, width - 90
    for group, key in panels:
        values = {v: s[key] for v, s in summary[group].items() if key in s}
        top = max((m + d for m, d, _ in values.values()), default=1.0) or 1.0
        title = f"{GROUPS[group].table or group}{' (' + GROUPS[group].label + ')' if GROUPS[group].label else ''}"
        draw.text((pad, y), f"{title}: {key[0]} {key[1]} (mean ± std over seeds)", fill="black", font=font)
        y += 24
        for value in GROUPS[group].values:
            if value not in values:
                continue
            mean, std, n = values[value]
            draw.text((pad, y + 3), value, fill="black", font=font)
            draw.rectangle([left, y + 2, left + (right - left) * mean / top, y + bar_h - 4], fill=(70, 110, 180))
            # the whisker stays inside the panel: mean - std can be below 0 where a metric is near 0
            lo, hi = (min(right, max(left, left + (right - left) * (mean + d * std) / top)) for d in (-1, 1))
            draw.line([lo, y + bar_h // 2 - 1, hi, y + bar_h // 2 - 1], fill="black", width=1)
            draw.text((right + 6, y + 3), f"{mean:.2f}±{std:.2f}" if n > 1 else f"{mean:.2f} (n=1)", fill="black",
                      font=font)
            y += bar_h
        y += 16
    with atomic(png) as tmp:
        image.save(tmp, format="PNG")
