"""What every benchmark looks like to the embed/evaluate stages and to `lincir score`.

A benchmark reader turns one official annotation layout into:
- `images`: every image the benchmark needs, name -> ImageSource (path, optional box);
- `gallery`: the names ranked globally (empty where there is only a per-query gallery);
  `gallery_for(query)` is what one query is ranked against (FashionIQ: its category);
- `queries`: reference, condition text(s), ground truths, per-query candidate set;
- `score(...)`: the official metrics, in percent, from rankings by image name;
- `read_predictions` / `write_predictions`: the official (or, where there is none, our
  documented) prediction-file format, validated with messages that name query and value.

Rankings are plain dicts, query id -> list of image names, best first:
`rankings` rank `gallery_for(query)`, `candidate_rankings` rank `query.candidates`.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.core.errors import MAX_LISTED, PipelineError, quoted
from pipeline.data.images import ImageSource


@dataclass(frozen=True)
class Query:
    id: str  # CIRCO "id", CIRR "pairid", FashionIQ "<category>-<n>", GeneCIS "<task>-<n>"
    reference: str  # image name of the reference
    captions: tuple[str, ...]  # condition texts; their normalised features are averaged
    targets: tuple[str, ...] = ()  # every ground truth, the one target first; empty on test splits
    candidates: tuple[str, ...] = ()  # per-query set ranked on its own (CIRR group, GeneCIS gallery)
    aspects: tuple[str, ...] = ()  # CIRCO semantic aspects
    group: str = ""  # sub-benchmark the query belongs to (FashionIQ category, GeneCIS task)


Rankings = dict[str, list[str]]


@dataclass
class Benchmark:
    name: str
    split: str
    images: dict[str, ImageSource]
    gallery: list[str]
    queries: list[Query]
    exclude_reference: bool = False  # CIRR removes the reference from its own ranking
    depth: int = 50  # length of a submitted ranking
    extra: dict = field(default_factory=dict)
    galleries: dict[str, list[str]] = field(default_factory=dict)  # per-group gallery (FashionIQ)
    candidate_depth: int = 0  # length of a submitted candidate ranking (CIRR subset, GeneCIS); 0: none

    def __post_init__(self) -> None:
        # Readers build these from annotation files: catch inconsistent files here, once.
        seen: set[str] = set()
        for q in self.queries:
            if q.id in seen:
                raise PipelineError(f"{self.name} {self.split}: query id {q.id!r} appears twice")
            seen.add(q.id)
            unknown = [n for n in (q.reference, *q.targets, *q.candidates) if n not in self.images]
            if unknown:
                raise PipelineError(f"{self.name} {self.split}: query {q.id!r} names unknown images {unknown}")
        for group, names in {"": self.gallery, **self.galleries}.items():
            unknown = [n for n in names if n not in self.images]
            if unknown:
                where = f"gallery {group!r}" if group else "gallery"
                raise PipelineError(f"{self.name} {self.split}: {where} has unknown images {_listed(unknown)}")

    # --- what to rank -------------------------------------------------------------
    def gallery_for(self, query: Query) -> list[str]:
        """The names `query` is ranked against (before dropping its reference)."""
        return self.galleries[query.group] if self.galleries else self.gallery

    @property
    def has_targets(self) -> bool:
        return all(q.targets for q in self.queries)

    @property
    def ranks_gallery(self) -> bool:
        """False where a query has only its candidate set (GeneCIS)."""
        return bool(self.gallery or self.galleries)

    # --- metrics --------------------------------------------------------------------
    def score(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        raise NotImplementedError  # each reader's subclass computes its official metrics

    def breakdown(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        """Secondary metrics kept apart from `score` (CIRCO: mAP@10 per semantic aspect)."""
        return {}

    def per_query(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, list[float]]:
        """Each headline metric of `score` for each query alone (the official formula on a one-query
        benchmark), in query order: what a paired comparison of two rankings resamples. Their mean is
        `score` where the benchmark averages over queries (CIRCO, CIRR); FashionIQ and GeneCIS average
        over groups first. Per-group metrics (`R@10/dress`) are left out."""
        values: dict[str, list[float]] = {}
        for q in self.queries:
            scores = self.alone(q).score({q.id: rankings[q.id]} if rankings else {},
                                         {q.id: candidate_rankings[q.id]} if candidate_rankings else None)
            for metric, value in scores.items():
                if "/" not in metric:
                    values.setdefault(metric, []).append(value)
        return values

    def alone(self, query: Query) -> Benchmark:
        """This benchmark with `query` its only query (and only its group)."""
        return replace(self, queries=[query],
                       galleries={query.group: self.galleries[query.group]} if self.galleries else {})

    def require_targets(self) -> None:
        if not self.has_targets:
            raise PipelineError(
                f"{self.name} {self.split} has no ground truths: write the predictions with "
                "write_predictions and submit them to the benchmark's evaluation server"
            )

    def ranked(self, rankings: Rankings | None, what: str) -> list[list[str]]:
        """Each query's ranking in query order; a missing query is an error, not a zero."""
        if rankings is None:
            raise PipelineError(f"{self.name} needs {what} to be scored")
        missing = [q.id for q in self.queries if q.id not in rankings]
        if missing:
            raise PipelineError(f"{self.name} {self.split}: {what} lack {_listed(missing)}")
        return [list(rankings[q.id]) for q in self.queries]

    # --- prediction files -------------------------------------------------------------
    def file_header(self, kind: str) -> dict[str, str]:
        """Fixed entries a prediction file of `kind` ("rankings"/"candidates") carries (CIRR)."""
        return {}

    def encode_name(self, name: str) -> Any:
        """How an image name is written in a prediction file (CIRCO writes COCO ids as ints)."""
        return name

    def read_predictions(self, path: Path, subset_path: Path | None = None) -> tuple[Rankings, Rankings | None]:
        """(rankings, candidate_rankings) from the benchmark's prediction file(s), validated.

        Where there is a gallery, `path` holds gallery rankings and `subset_path` candidate
        rankings (required where candidate_depth > 0: CIRR's recall_subset file). GeneCIS has
        candidates only: `path` holds them.
        """
        if not self.ranks_gallery:
            if subset_path is not None:
                raise PipelineError(f"{self.name} has one prediction file; got a second: {subset_path}")
            return {}, self.check_rankings(read_ranking_file(path, self.file_header("candidates")), "candidates", path)
        rankings = self.check_rankings(read_ranking_file(path, self.file_header("rankings")), "rankings", path)
        if not self.candidate_depth:
            if subset_path is not None:
                raise PipelineError(f"{self.name} has no subset metric; got a subset file: {subset_path}")
            return rankings, None
        if subset_path is None:
            raise PipelineError(f"{self.name} also needs its subset predictions file (--subset-predictions)")
        candidates = read_ranking_file(subset_path, self.file_header("candidates"))
        return rankings, self.check_rankings(candidates, "candidates", subset_path)

    def write_predictions(
        self,
        path: Path,
        rankings: Rankings | None,
        candidate_rankings: Rankings | None = None,
        subset_path: Path | None = None,
    ) -> None:
        """Writes the official submission file(s), cut to the official lengths and validated
        first, so a file that leaves here passes the evaluation server's checks."""
        if self.ranks_gallery:
            self._write(path, "rankings", rankings)
            if self.candidate_depth:
                if subset_path is None:
                    raise PipelineError(f"{self.name} needs a path for its subset predictions file")
                self._write(subset_path, "candidates", candidate_rankings)
        else:
            self._write(path, "candidates", candidate_rankings)

    def _write(self, path: Path, kind: str, rankings: Rankings | None) -> None:
        if rankings is None:
            raise PipelineError(f"{self.name}: no {kind} to write to {path}")
        length = self.depth if kind == "rankings" else self.candidate_depth
        cut = {qid: list(names)[:length] for qid, names in rankings.items()}
        self.check_rankings(cut, kind, path)
        content = dict(self.file_header(kind))
        content.update({q.id: [self.encode_name(n) for n in cut[q.id]] for q in self.queries})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))

    def check_rankings(self, rankings: dict[str, list], kind: str, source: Path | str) -> Rankings:
        """Every query present, nothing else; each ranking the official length, no duplicates,
        only names the query may be ranked against. Returns names as strings."""
        problems: list[str] = []
        known = {q.id for q in self.queries}
        unknown = [qid for qid in rankings if qid not in known]
        if unknown:
            problems.append(f"{len(unknown)} unknown query ids: {_listed(unknown)}")
        missing = [q.id for q in self.queries if q.id not in rankings]
        if missing:
            problems.append(f"{len(missing)} of {len(self.queries)} queries missing: {_listed(missing)}")
        gallery_sets: dict[int, set[str]] = {}
        checked: Rankings = {}
        for q in self.queries:
            if q.id not in rankings:
                continue
            if kind == "rankings":
                gallery = self.gallery_for(q)
                if id(gallery) not in gallery_sets:  # one set per gallery, not per query
                    gallery_sets[id(gallery)] = set(gallery)
                allowed = gallery_sets[id(gallery)]
                size = len(allowed) - (self.exclude_reference and q.reference in allowed)
                length = min(self.depth, size)
                banned = q.reference if self.exclude_reference else None
            else:
                allowed = set(q.candidates)
                length = min(self.candidate_depth, len(allowed))
                banned = None
            names, why = _check_one(rankings[q.id], allowed, length, banned)
            if why:
                problems.append(f"query {q.id!r}: {why}")
            checked[q.id] = names
        if problems:
            shown = "\n  ".join(problems[:MAX_LISTED])
            more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
            raise PipelineError(
                f"{source}: {len(problems)} problem(s) in the {self.name} {self.split} {kind}:\n  {shown}{more}"
            )
        return checked


def _check_one(ranking: Any, allowed: Collection[str], length: int, banned: str | None) -> tuple[list[str], str]:
    """(names, "") for a good ranking, else (_, the first problem in words)."""
    if not isinstance(ranking, list):
        return [], f"expected a list of image names, got {type(ranking).__name__}"
    names: list[str] = []
    for rank, item in enumerate(ranking, start=1):
        # COCO ids may come as ints (CIRCO's own example file) or as strings
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            return [], f"rank {rank} is {quoted(item)}, not an image name"
        names.append(str(item))
    if len(names) != length:
        return names, f"{len(names)} names, expected {length}"
    seen: dict[str, int] = {}
    for rank, name in enumerate(names, start=1):
        if name in seen:
            return names, f"{quoted(name)} appears twice (ranks {seen[name]} and {rank})"
        seen[name] = rank
        if name == banned:
            return names, f"rank {rank} is the query's own reference {quoted(name)}, which this benchmark excludes"
        if name not in allowed:
            return names, f"rank {rank}: {quoted(name)} is not an image this query is ranked against"
    return names, ""


def read_ranking_file(path: Path, header: dict[str, str]) -> dict[str, list]:
    """`{"<query id>": [names...]}` plus the fixed `header` entries, which are checked and dropped."""
    content = read_json(path, "prediction file", unique_keys=True)
    if not isinstance(content, dict):
        raise PipelineError(f"{path}: expected a JSON object of query id -> ranking, got {type(content).__name__}")
    for key, value in header.items():
        if content.get(key) != value:
            raise PipelineError(f"{path}: expected {key!r}: {value!r}, found {quoted(content.get(key))}")
    return {k: v for k, v in content.items() if k not in header}


def read_json(path: Path, what: str, unique_keys: bool = False) -> Any:
    """A JSON file, or a message naming it and what is wrong. With `unique_keys`, a key that
    appears twice in an object is an error (json keeps the last one silently)."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{what} {path} is a directory; give the path of the JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=_unique(path) if unique_keys else None)
    except FileNotFoundError:
        raise PipelineError(f"{what} not found: {path}") from None
    except PermissionError:
        raise PipelineError(f"{what} {path} cannot be read: permission denied") from None
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); JSON files are UTF-8") from None
    except json.JSONDecodeError as e:
        raise PipelineError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise PipelineError(f"{path}: JSON nested too deeply to be a {what}") from None


def _unique(path: Path):
    def pairs(items: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key in out:
                raise PipelineError(f"{path}: key {quoted(key)} appears twice; each query must appear once")
            out[key] = value
        return out

    return pairs


def inside(folder: Path, relative, annotation: Path) -> Path:
    """`folder / relative` for a path read from an annotation file, refused when it is absolute or
    climbs out with `..`: a benchmark reads only its own images, which are DVC dependencies."""
    rel = Path(str(relative))
    if not str(relative) or rel.is_absolute() or ".." in rel.parts:
        raise PipelineError(f"{annotation}: image path {quoted(str(relative))} is absolute or leaves {folder}; "
                            f"annotation paths must be relative and inside the benchmark root")
    return folder / rel


def entry_field(entry: Any, key: str, path: Path, index: int) -> Any:
    """entry[key], or an error naming the annotation file, the entry and the key."""
    if not isinstance(entry, dict):
        raise PipelineError(f"{path}: entry {index} is a {type(entry).__name__}, expected an object")
    if key not in entry:
        raise PipelineError(f"{path}: entry {index} has no {key!r}")
    return entry[key]


def annotation_list(path: Path, what: str) -> list:
    content = read_json(path, what)
    if not isinstance(content, list):
        raise PipelineError(f"{path}: expected a JSON list of {what} entries, got {type(content).__name__}")
    return content


def _listed(items: list[str]) -> str:
    shown = ", ".join(quoted(i) for i in items[:MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > MAX_LISTED else "")
