"""Fits scikit-learn's LogisticRegression on the design matrices that
`nearcast-train bench-logistic` exported (the very rows linfa was fitted on) and
prints its test AUC and fit time as one JSON line."""

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score


def load(directory: Path, name: str, features: int):
    x = np.fromfile(directory / f"{name}_x.f64", dtype="<f8").reshape(-1, features)
    y = np.fromfile(directory / f"{name}_y.u8", dtype=np.uint8).astype(bool)
    return x, y


def main() -> None:
    directory, alpha = Path(sys.argv[1]), float(sys.argv[2])
    features = len(json.loads((directory / "meta.json").read_text())["features"])
    x, y = load(directory, "train", features)
    tx, ty = load(directory, "test", features)
    # linfa minimises sum(log loss) + alpha/2 |w|^2; scikit-learn minimises
    # C * sum(log loss) + 1/2 |w|^2: the same optimum with C = 1 / alpha.
    model = LogisticRegression(C=1.0 / alpha, solver="lbfgs", max_iter=1000, tol=1e-6)
    started = time.perf_counter()
    model.fit(x, y)
    fit_seconds = time.perf_counter() - started
    auc = roc_auc_score(ty, model.predict_proba(tx)[:, 1])
    print(json.dumps({
        "library": "scikit-learn",
        "train_rows": int(x.shape[0]),
        "test_rows": int(tx.shape[0]),
        "features": features,
        "fit_seconds": fit_seconds,
        "iterations": int(model.n_iter_[0]),
        "auc": auc,
    }))


if __name__ == "__main__":
    main()
