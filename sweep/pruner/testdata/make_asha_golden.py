"""Golden decisions of Optuna's SuccessiveHalvingPruner for pruner.SuccessiveHalving (asha_test.go).

    cd sweep/pruner/testdata && /usr/bin/python3 make_asha_golden.py   # Debian's python3-optuna

Each scenario runs trials one after another, as `sweep run` with parallel 1 does: a trial reports its value at
every step, asks should_prune after each report, and stops when pruned. The step each trial was pruned at (or -1)
is the golden. Values are seeded random learning curves; a few are NaN (null).

The study is in Optuna's in-memory storage, where the pruner's rules hold as its code states them. On an RDB
storage Optuna 3.1's trial cache updates the checked trial in place, so its own rung value competes twice (once
recorded, once appended) and a trial is promoted a little more often; that is a storage artefact, not the rule.
"""
import json, math, random
import optuna

from replay import replay

optuna.logging.set_verbosity(optuna.logging.WARNING)
scenarios = []
settings = []
for min_resource in ("auto", 1, 2):
    for eta in (2, 3, 4):
        for rate in (0, 1):
            for bootstrap in (0, 2):
                if bootstrap and min_resource == "auto":
                    continue  # Optuna refuses this combination
                for direction in ("maximize", "minimize"):
                    settings.append((min_resource, eta, rate, bootstrap, direction))
rng = random.Random(20261202)
for i, (min_resource, eta, rate, bootstrap, direction) in enumerate(settings):
    n_trials, n_steps = 24, 12
    values = []
    for t in range(n_trials):
        target, speed = rng.random(), rng.uniform(0.1, 0.8)
        curve = [target * (1 - math.exp(-speed * (s + 1))) + rng.gauss(0, 0.02) for s in range(n_steps)]
        if rng.random() < 0.04:
            curve[rng.randrange(n_steps)] = float("nan")
        values.append(curve)
    study = optuna.create_study(direction=direction,
                                pruner=optuna.pruners.SuccessiveHalvingPruner(
                                    min_resource=min_resource, reduction_factor=eta,
                                    min_early_stopping_rate=rate, bootstrap_count=bootstrap))
    pruned_at = replay(study, values)
    scenarios.append({"min_resource": 0 if min_resource == "auto" else min_resource, "reduction_factor": eta,
                      "min_early_stopping_rate": rate, "bootstrap_count": bootstrap, "direction": direction,
                      "values": [[None if math.isnan(v) else v for v in c] for c in values], "pruned_at": pruned_at})
with open("asha_golden.json", "w") as f:
    json.dump({"generator": "make_asha_golden.py, optuna " + optuna.__version__, "scenarios": scenarios}, f)
print(len(scenarios), "scenarios,", sum(sum(a >= 0 for a in s["pruned_at"]) for s in scenarios), "pruned trials")
