"""Optuna's own parameter importances (PED-ANOVA, get_param_importances' default) for a few
studies, written as dashboard/testdata/ped_anova.json: the trials and the numbers the
dashboard's importance (dashboard/importance.go) must reproduce.

Needs an Optuna with PedAnovaImportanceEvaluator (3.6 or later; Debian 12 ships 3.1). Any
checkout of Optuna's source works without installing it, on Debian's numpy and SQLAlchemy:

    git clone https://github.com/optuna/optuna /tmp/optuna-src
    PYTHONPATH=/tmp/optuna-src /usr/bin/python3 scripts/peers/ped_anova.py > dashboard/testdata/ped_anova.json
"""
import json, math, sys, warnings

import optuna
from optuna.distributions import distribution_to_json
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def mixed(t):
    x = t.suggest_float("x", -10, 10)
    lr = t.suggest_float("lr", 1e-6, 1e-1, log=True)
    n = t.suggest_int("n", 1, 8)
    width = t.suggest_int("width", 1, 1024, log=True)
    drop = t.suggest_float("dropout", 0.0, 0.5, step=0.05)
    cell = t.suggest_categorical("cell", ["gru", "lstm", "rnn"])
    return x * x / 10 + abs(math.log10(lr) + 4) + (1.5 if cell == "rnn" else 0) + 0.01 * n + drop + 0.001 * width


def maximise(t):
    a = t.suggest_float("a", 0, 1)
    b = t.suggest_float("b", 0, 1)
    return math.sin(6 * a) + 0.1 * b


def conditional(t):
    kind = t.suggest_categorical("kind", ["small", "large", "other"])
    if kind == "small":
        x = t.suggest_float("x", 0, 1)
    elif kind == "large":
        x = t.suggest_float("x", 0, 100) / 100  # another domain: another regime
    else:
        x = 0.5
    y = t.suggest_int("y", 0, 3) if kind != "other" else 0
    if t.number == 5:  # a regime of one trial, too small to count, among the best
        y += t.suggest_int("z", 0, 10) - 100
    else:
        y += t.suggest_int("z", 0, 1)
    # 99 values on a grid of 50 cells: every odd value falls on a midpoint.
    k = t.suggest_int("k", 0, 98)
    return (x - 0.3) ** 2 + 0.05 * y + (0.2 if kind == "large" else 0) + (k % 7) / 70


def ties(t):
    x = t.suggest_float("x", 0, 1)
    y = t.suggest_categorical("y", [True, False, None, 3])
    return round(x * 3) / 3 + (0 if y is True else 0.5)


def infinite(t):
    x = t.suggest_float("x", 0, 1)
    y = t.suggest_float("y", 0, 1)
    return float("inf") if x > 0.9 else x + 0.01 * y


def lr_only(t):
    return abs(math.log10(t.suggest_float("lr", 1e-6, 3e-3, log=True)) + 4)


def two_objectives(t):
    x = t.suggest_float("x", 0, 1)
    y = t.suggest_float("y", 0, 1)
    return x + 0.1 * y, y


def extremes(t):
    seed = t.suggest_int("seed", -2**62, 2**62)  # more grid steps than a 64-bit int holds
    q = t.suggest_float("q", 0, 1, step=1e-20)
    two = t.suggest_float("two", 0.1, 0.3, step=0.2)  # two values, though 0.1 + 0.2 > 0.3 in binary
    flag = t.suggest_categorical("flag", [True, False] if t.number % 2 else [1, 0])  # Python: True == 1
    return abs(seed) / 2**62 + q + (0.5 if two > 0.2 else 0) + (0.3 if flag else 0)


def build(name, objective, n, directions, sampler):
    study = optuna.create_study(study_name=name, directions=directions, sampler=sampler)
    study.optimize(objective, n_trials=n)
    target = None
    if len(directions) > 1:  # the dashboard shows the first objective: importance for it
        sign = 1 if directions[0] == "minimize" else -1
        target = lambda t: sign * t.values[0]
    got = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target=target)
    trials = []
    for t in study.trials:
        trials.append({
            "number": t.number,
            "state": t.state.name,
            "value": None if t.values is None else [v if math.isfinite(v) else str(v) for v in t.values][0],
            "params": {k: t.distributions[k].to_internal_repr(v) for k, v in t.params.items()},
            "distributions": {k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()},
        })
    return {"name": name, "direction": directions[0], "trials": trials, "importances": got}


studies = [
    build("mixed", mixed, 120, ["minimize"], optuna.samplers.RandomSampler(seed=0)),
    build("maximise-tpe", maximise, 60, ["maximize"], optuna.samplers.TPESampler(seed=1)),
    build("conditional", conditional, 90, ["minimize"], optuna.samplers.RandomSampler(seed=2)),
    build("ties", ties, 40, ["minimize"], optuna.samplers.RandomSampler(seed=3)),
    build("infinite", infinite, 50, ["minimize"], optuna.samplers.RandomSampler(seed=4)),
    build("lr-only", lr_only, 30, ["minimize"], optuna.samplers.TPESampler(seed=5)),
    build("few", mixed, 6, ["minimize"], optuna.samplers.RandomSampler(seed=6)),
    build("two-objectives", two_objectives, 50, ["maximize", "minimize"], optuna.samplers.RandomSampler(seed=7)),
    build("extremes", extremes, 60, ["minimize"], optuna.samplers.RandomSampler(seed=8)),
]
json.dump({"optuna": optuna.__version__, "evaluator": "PedAnovaImportanceEvaluator()", "studies": studies},
          sys.stdout, separators=(",", ":"))
print()
