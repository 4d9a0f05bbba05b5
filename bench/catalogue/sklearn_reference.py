"""The reference: scikit-learn's plain logistic regression on one-hot context, location
cells and the person's history, trained and tested on the same time split as the
trainer, with the same metric definitions as `nearcast-train evaluate`.

    python bench/catalogue/sklearn_reference.py DATA.jsonl TEST_FROM NEARCAST_EVAL.json

DATA.jsonl is split at TEST_FROM (RFC 3339): earlier decisions train, later ones test.
Rows are the scored candidates (`--label purchased`). NEARCAST_EVAL.json is the output of
`nearcast-train evaluate --json` on the test part; both are printed side by side.
"""

import json
import sys
import time

import h3
import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score


def rows(path, test_from):
    train, test = [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            hist = {}
            if r.get("personalised"):
                for c in r["candidates"]:
                    a = c.get("affinity") or 0.0
                    if a > 0 and c["category"] not in hist:
                        hist[c["category"]] = a
            w = r.get("weather")
            ctx = {
                "daypart=" + r["daypart"]: 1,
                "weekday=" + r["weekday"]: 1,
                "hour=" + r["local_time"][11:13]: 1,
                "weather=" + (w["condition"] if w else "missing"): 1,
                "cell7=" + h3.cell_to_parent(r["cell"], 7): 1,
                "cell8=" + h3.cell_to_parent(r["cell"], 8): 1,
                "cell9=" + r["cell"]: 1,
            }
            for k, v in hist.items():
                ctx["history=" + k] = v
            group = []
            for c in r["candidates"]:
                if c.get("reason"):
                    continue
                x = dict(ctx)
                x["category=" + c["category"]] = 1
                x["offer=" + c["offer_id"]] = 1
                x["store=" + c["store_id"]] = 1
                x["distance_km"] = min(c["distance_m"] / 1000.0, 1.0)
                if r.get("personalised"):
                    x["affinity"] = c.get("affinity") or 0.0
                group.append((x, bool(c["purchased"])))
            if group:
                (test if r["at"] >= test_from else train).append(group)
    return train, test


def hit_at_k(groups, k):
    """As nearcast-train's eval::hit_at_k: decisions with a positive; ties split."""
    hits, n = 0.0, 0
    for scores, labels in groups:
        if not any(labels):
            continue
        n += 1
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        slots, i = k, 0
        while i < len(order) and slots > 0:
            j = i + 1
            while j < len(order) and scores[order[j]] == scores[order[i]]:
                j += 1
            size = j - i
            pos = sum(labels[order[t]] for t in range(i, j))
            if pos:
                take = min(slots, size)
                miss = 1.0
                for t in range(take):
                    miss *= max(size - pos - t, 0) / (size - t)
                hits += 1 - miss
                break
            slots -= size
            i = j
    return hits / n


def main():
    data, test_from, ours_path = sys.argv[1], sys.argv[2], sys.argv[3]
    train, test = rows(data, test_from.replace("+00:00", "Z"))
    vec = DictVectorizer()
    xt = vec.fit_transform([x for g in train for x, _ in g])
    yt = np.array([y for g in train for _, y in g])
    started = time.time()
    model = LogisticRegression(C=1.0, max_iter=1000, solver="lbfgs")
    model.fit(xt, yt)
    fit_s = time.time() - started
    xs = vec.transform([x for g in test for x, _ in g])
    ys = np.array([y for g in test for _, y in g])
    p = model.predict_proba(xs)[:, 1]
    groups, i = [], 0
    for g in test:
        groups.append((list(p[i:i + len(g)]), [y for _, y in g]))
        i += len(g)
    ref = {
        "auc": roc_auc_score(ys, p),
        "log_loss": log_loss(ys, p),
        "hit_at_1": hit_at_k(groups, 1),
        "hit_at_3": hit_at_k(groups, 3),
        "mean_score": float(p.mean()),
        "base_rate": float(ys.mean()),
        "train_rows": int(len(yt)),
        "test_rows": int(len(ys)),
        "test_decisions_with_positive": sum(1 for _, l in groups if any(l)),
        "fit_seconds": round(fit_s, 2),
    }
    if ours_path == "-":
        print(json.dumps({"sklearn_logistic": ref}))
        return
    with open(ours_path) as f:
        ours = json.load(f)
    nc = {
        "auc": ours["model"]["auc"],
        "log_loss": ours["model"]["log_loss"],
        "hit_at_1": ours["model"]["hit_at_1"],
        "hit_at_3": ours["model"]["hit_at_3"],
        "mean_score": ours["mean_score"],
        "base_rate": ours["base_rate"],
        "test_rows": ours["rows"],
        "test_decisions_with_positive": ours["decisions_with_positive"],
    }
    print(f"{'metric':<30} {'nearcast':>10} {'sklearn LR':>10}")
    for k in ["auc", "log_loss", "hit_at_1", "hit_at_3", "mean_score", "base_rate",
              "test_rows", "test_decisions_with_positive"]:
        print(f"{k:<30} {nc[k]:>10.4f} {ref[k]:>10.4f}")
    print(json.dumps({"nearcast": nc, "sklearn_logistic": ref}))


if __name__ == "__main__":
    main()
