#!/usr/bin/python3
"""Writes metrics_golden.json: metric values computed by scikit-learn and scipy
on fixed random inputs, the reference the Go metrics are tested against.

Run with Debian's python3-sklearn and python3-scipy:
    /usr/bin/python3 metrics_golden.py > metrics_golden.json
"""
import json
import math

import numpy as np
import scipy
import sklearn
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

rng = np.random.RandomState(20261127)
cases = []


def classification(name, gold, pred):
    gold = [int(g) for g in gold]
    pred = [int(p) for p in pred]
    # T5's f1_score_with_invalid: an invalid prediction becomes the opposite of gold.
    fixed = [p if p in (0, 1) else 1 - g for g, p in zip(gold, pred)]
    c = {"name": name, "gold": gold, "pred": pred,
         "accuracy": accuracy_score(gold, pred),
         "mcc": matthews_corrcoef(gold, pred)}
    if set(gold) <= {0, 1}:
        c["f1"] = f1_score(gold, fixed, zero_division=0)
    cases.append(c)


def regression(name, x, y):
    x = [float(v) for v in x]
    y = [float(v) for v in y]
    p = pearsonr(x, y)[0] if np.std(x) > 0 and np.std(y) > 0 else float("nan")
    s = spearmanr(x, y)[0] if np.std(x) > 0 and np.std(y) > 0 else float("nan")
    cases.append({"name": name, "x": x, "y": y,
                  "pearson": 0.0 if math.isnan(p) else float(p),
                  "spearman": 0.0 if math.isnan(s) else float(s)})


for n in (7, 50, 300):
    gold = rng.randint(0, 2, n)
    pred = np.where(rng.rand(n) < 0.7, gold, 1 - gold)
    pred[rng.rand(n) < 0.1] = -1  # invalid generations
    classification(f"binary_{n}", gold, pred)
gold = rng.randint(0, 3, 200)
pred = np.where(rng.rand(200) < 0.6, gold, rng.randint(0, 3, 200))
pred[rng.rand(200) < 0.05] = -1
classification("three_class_200", gold, pred)
classification("constant_prediction", rng.randint(0, 2, 40), np.ones(40, dtype=int))
classification("constant_gold", np.zeros(30, dtype=int), rng.randint(0, 2, 30))
classification("no_positive", np.zeros(10, dtype=int), np.zeros(10, dtype=int))

for n in (5, 100, 400):
    y = rng.uniform(0, 5, n)
    x = np.clip(y + rng.normal(0, 1, n), 0, 5)
    regression(f"continuous_{n}", x, y)
y = np.round(rng.uniform(0, 5, 150) * 5) / 5  # many ties, as T5's 0.2 grid makes
x = np.round(np.clip(y + rng.normal(0, 0.8, 150), 0, 5) * 5) / 5
regression("ties_150", x, y)
regression("constant_prediction", np.full(20, 2.4), rng.uniform(0, 5, 20))

print(json.dumps({"generator": "metrics_golden.py", "sklearn": sklearn.__version__, "scipy": scipy.__version__,
                  "cases": cases}, indent=1))
