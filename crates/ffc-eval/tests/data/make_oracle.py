"""Write oracle.json: verification and TAR@FAR results computed with numpy and scikit-learn.

The verification part follows insightface's `verification.py` protocol: squared distance of
unit features, thresholds numpy.arange(0, 4, 0.01), KFold(n_splits=10, shuffle=False), the
first threshold maximising training accuracy per fold, and numpy's mean and population std.
Distances are computed in float64 from the float32 features, as ffc-eval does.

The TAR@FAR part follows insightface's IJB-C scripts: sklearn.metrics.roc_curve with its
defaults, the arrays reversed, then numpy.argmin of |fpr - far| per requested FAR.

Floats that the Rust side reads as f32 are stored as their IEEE-754 bit patterns so that no
decimal round trip can change them.

Run with numpy and scikit-learn installed (tested with numpy 2.4.6, scikit-learn 1.9.1):
    python3 make_oracle.py > oracle.json
"""

import json

import numpy as np
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

SEED = 20240611
DIM = 8
IDENTITIES = 12
IMAGES_PER_IDENTITY = 10
PAIRS = 233  # not a multiple of 10, so the first 3 folds hold one extra pair
FOLDS = 10
# At FAR 0.43 the nearest point of the full ROC was dropped as collinear, so the TAR
# differs from a read-out that keeps every point.
FARS = [1e-3, 1e-2, 0.05, 0.1, 0.3, 0.43, 0.5]


def bits(values):
    return [int(v) for v in np.asarray(values, dtype=np.float32).view(np.uint32)]


def make_features(rng):
    centers = rng.normal(size=(IDENTITIES, DIM))
    labels = np.repeat(np.arange(IDENTITIES), IMAGES_PER_IDENTITY)
    raw = centers[labels] + 0.9 * rng.normal(size=(labels.size, DIM))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return unit.astype(np.float32), labels


def make_pairs(rng, labels):
    pairs, issame = [], []
    while len(pairs) < PAIRS:
        a, b = rng.integers(0, labels.size, size=2)
        want_same = len(pairs) % 2 == 0
        if a != b and (labels[a] == labels[b]) == want_same:
            pairs.append((int(a), int(b)))
            issame.append(want_same)
    return np.array(pairs), np.array(issame)


def verification(features, pairs, issame):
    f64 = features.astype(np.float64)
    dist = np.sum(np.square(f64[pairs[:, 0]] - f64[pairs[:, 1]]), axis=1)
    thresholds = np.arange(0, 4, 0.01)
    gaps = np.abs(dist[:, None] - thresholds[None, :]).min()
    assert gaps > 1e-6, "a distance lies on a grid threshold; change SEED"

    def accuracy(threshold, idx):
        predict = dist[idx] < threshold
        return np.mean(predict == issame[idx])

    fold_acc, fold_thr = [], []
    for train, test in KFold(n_splits=FOLDS, shuffle=False).split(np.arange(len(dist))):
        train_acc = [accuracy(t, train) for t in thresholds]
        best = int(np.argmax(train_acc))
        fold_thr.append(float(thresholds[best]))
        fold_acc.append(float(accuracy(thresholds[best], test)))
    return {
        "fold_accuracies": fold_acc,
        "thresholds": fold_thr,
        "accuracy_mean": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
    }


def roc_readout(rng):
    n = 2000
    issame = rng.random(n) < 0.3
    # Two decimals create many tied scores, which exercises the tie and collinearity rules.
    scores = np.round(rng.normal(loc=np.where(issame, 0.5, 0.0), scale=0.25), 2)
    scores = scores.astype(np.float32)
    fpr, tpr, _ = roc_curve(issame, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    tars = [float(tpr[np.argmin(np.abs(fpr - far))]) for far in FARS]
    return {"score_bits": bits(scores), "issame": issame.tolist(), "fars": FARS, "tars": tars}


def main():
    rng = np.random.default_rng(SEED)
    features, labels = make_features(rng)
    pairs, issame = make_pairs(rng, labels)
    out = {
        "dim": DIM,
        "folds": FOLDS,
        "feature_bits": bits(features.ravel()),
        "pairs": pairs.tolist(),
        "issame": issame.tolist(),
        "verification": verification(features, pairs, issame),
        "roc": roc_readout(rng),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
