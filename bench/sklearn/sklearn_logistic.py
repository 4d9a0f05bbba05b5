"""Fits scikit-learn's LogisticRegression on the design matrices that
`nearcast-train bench-logistic` exported (the very rows linfa was fitted on) and
prints its test AUC, test log loss and fit time as one JSON line per variant: on the
raw features, and after a StandardScaler (as nearcast-train standardizes; the scaling
time is reported apart)."""

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler


def load(directory: Path, name: str, features: int):
    x = np.fromfile(directory / f"{name}_x.f64", dtype="<f8").reshape(-1, features)
    y = np.fromfile(directory / f"{name}_y.u8", dtype=np.uint8).astype(bool)
    return x, y


def main() -> None:
    directory, alpha = Path(sys.argv[1]), float(sys.argv[2])
    features = len(json.loads((directory / "meta.json").read_text())["features"])
    x, y = load(directory, "train", features)
    tx, ty = load(directory, "test", features)
    for variant in ("raw", "standardized"):
        started = time.perf_counter()
        if variant == "standardized":
            scaler = StandardScaler().fit(x)
            fx, ftx = scaler.transform(x), scaler.transform(tx)
        else:
            fx, ftx = x, tx
        scale_seconds = time.perf_counter() - started
        # linfa minimises sum(log loss) + alpha/2 |w|^2; scikit-learn minimises
        # C * sum(log loss) + 1/2 |w|^2: the same optimum with C = 1 / alpha.
        model = LogisticRegression(C=1.0 / alpha, solver="lbfgs", max_iter=1000, tol=1e-6)
        started = time.perf_counter()
        model.fit(fx, y)
        fit_seconds = time.perf_counter() - started
        p = model.predict_proba(ftx)[:, 1]
        print(json.dumps({
            "library": "scikit-learn",
            "features_as": variant,
            "train_rows": int(x.shape[0]),
            "test_rows": int(tx.shape[0]),
            "features": features,
            "scale_seconds": scale_seconds,
            "fit_seconds": fit_seconds,
            "iterations": int(model.n_iter_[0]),
            "auc": roc_auc_score(ty, p),
            "log_loss": log_loss(ty, p),
        }))


if __name__ == "__main__":
    main()
