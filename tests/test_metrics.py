import numpy as np
import pytest
from dcnprobe.model.metrics import roc_auc


def brute_force_auc(scores, labels):
    """Independent definition: over all (positive, negative) pairs, wins + ties / 2."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


@pytest.mark.parametrize("seed", range(5))
def test_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 20, size=600).astype(float)  # many ties on purpose
    labels = (rng.random(600) < 0.3).astype(int)
    assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_known_values():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.zeros(4), labels) == 0.5
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75


def test_one_class_is_nan():
    assert np.isnan(roc_auc(np.arange(5.0), np.ones(5)))
