"""The metric formulas on small rankings whose values are worked out by hand."""
import random

import pytest

from pipeline.evaluation import metrics


def test_recall_at_k_counts_the_target_within_the_first_k():
    ranking = ["a", "b", "c", "d"]
    assert metrics.recall_at_k(ranking, "c", 2) == 0.0
    assert metrics.recall_at_k(ranking, "c", 3) == 1.0
    assert metrics.recall_at_k(ranking, "z", 50) == 0.0  # a ranking shorter than k is fine
    assert metrics.recall_at_k([3, 1, 2], 1, 2) == 1.0  # ids work as well as names


def test_average_precision_hand_computed():
    ranking = ["a", "b", "c", "d", "e"]
    relevant = {"b", "d", "z"}  # "z" never retrieved
    # hits at ranks 2 and 4: P@2 = 1/2, P@4 = 2/4
    assert metrics.average_precision_at_k(ranking, relevant, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    # only rank 2 counts below k=2, and the denominator is min(k, #gt) = 2
    assert metrics.average_precision_at_k(ranking, relevant, 2) == pytest.approx((1 / 2) / 2)
    assert metrics.average_precision_at_k(ranking, relevant, 1) == 0.0


def test_average_precision_denominator_is_min_of_k_and_ground_truths():
    assert metrics.average_precision_at_k(["a", "x", "y"], ["a"], 50) == 1.0
    assert metrics.average_precision_at_k(["x", "y", "a"], ["a"], 50) == pytest.approx(1 / 3)
    # 3 ground truths, k = 2, both top slots relevant: a perfect AP@2
    assert metrics.average_precision_at_k(["a", "b", "c"], ["a", "b", "c"], 2) == 1.0
    with pytest.raises(ValueError):
        metrics.average_precision_at_k(["a"], [], 5)


def _official_ap(ranking, gts, k):
    """CIRCO evaluation.py's formula, written out with lists: cumsum(labels) * labels / rank."""
    labels = [1 if name in gts else 0 for name in ranking]
    cumulative = [sum(labels[: i + 1]) for i in range(len(labels))]
    precisions = [c * hit / (i + 1) for i, (c, hit) in enumerate(zip(cumulative, labels))]
    return sum(precisions[:k]) / min(len(gts), k)


def test_average_precision_matches_the_official_formula_on_random_rankings():
    rng = random.Random(0)
    for _ in range(200):
        pool = list(range(80))
        ranking = rng.sample(pool, 50)
        gts = rng.sample(pool, rng.randint(1, 15))
        for k in (5, 10, 25, 50):
            assert metrics.average_precision_at_k(ranking, gts, k) == pytest.approx(_official_ap(ranking, gts, k))


def test_means_are_percent_over_queries():
    rankings = [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    assert metrics.mean_recall_at_k(rankings, ["b", "c", "x", "h"], (1, 2)) == {1: 25.0, 2: 75.0}
    maps = metrics.mean_average_precision_at_k(rankings, [["b"], ["c", "d"], ["x"], ["g", "z"]], (2,))
    assert maps[2] == pytest.approx(100 * (0.5 + 1.0 + 0.0 + 0.5) / 4)
    with pytest.raises(ValueError, match="2 rankings but 1 ground truths"):
        metrics.mean_recall_at_k([["a"], ["b"]], ["a"], (1,))


def test_mean_by_label_averages_each_label_over_the_values_carrying_it():
    values = [1.0, 0.5, 0.0]
    labels = [("cardinality", "negation"), ("negation",), ("viewpoint",)]
    assert metrics.mean_by_label(values, labels) == {"cardinality": 100.0, "negation": 75.0, "viewpoint": 0.0}


def test_mean_over_groups_is_unweighted():
    per_group = {"dress": {"R@10": 10.0, "R@50": 30.0}, "shirt": {"R@10": 20.0, "R@50": 60.0}}
    assert metrics.mean_over_groups(per_group) == {"R@10": 15.0, "R@50": 45.0}


def test_zero_shot_classification_on_a_constructed_case():
    import torch

    # three classes along the axes; images near class 0, 2, 1, 2 (one far from every class but closest to 2)
    classes = torch.eye(3) * 5
    images = torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.2, 3.0], [0.1, 2.0, 0.3], [0.2, 0.3, 0.4]])
    assert metrics.zero_shot_classes(images, classes) == [0, 2, 1, 2]
    predicted = [("circle", "red"), ("star", "red"), ("star", "blue"), ("circle", "blue")]
    truth = [("circle", "red"), ("star", "blue"), ("star", "blue"), ("star", "blue")]
    acc = metrics.attribute_accuracy(predicted, truth, ["shape", "colour"])
    assert acc == {"all": 50.0, "shape": 75.0, "colour": 75.0}
