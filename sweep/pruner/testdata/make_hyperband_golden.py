"""Golden decisions of Optuna's HyperbandPruner for pruner.Hyperband (hyperband_test.go).

    cd sweep/pruner/testdata && /usr/bin/python3 make_hyperband_golden.py   # Debian's python3-optuna

Each scenario runs trials one after another, as `sweep run` with parallel 1 does: a trial reports its value at
every step, asks should_prune after each report, and stops when pruned. Goldens per trial: the step it was
pruned at (or -1), and the trial numbers its sampler was shown when the trial was created (Optuna hands the
sampler only the trials of the new trial's bracket once the pruner has set its brackets up). Values are seeded
random learning curves; a few are NaN (null). In-memory storage, as for make_asha_golden.py.
"""
import json, math, random
import optuna

from replay import replay

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Recorder(optuna.samplers.RandomSampler):
    """A random sampler that notes which trials each new trial's sampling saw."""

    def __init__(self):
        super().__init__(seed=0)
        self.seen = []

    def infer_relative_search_space(self, study, trial):
        self.seen.append(sorted(t.number for t in study.get_trials(deepcopy=False)))
        return {}


settings = []
for name in ("read/hidden-256/sst2", "lora/rank-8/rte"):
    for min_resource in (1, 2):
        for max_resource in ("auto", 12, 40):
            for eta in (2, 3, 4):
                for bootstrap in (0, 2):
                    if bootstrap and max_resource == "auto":
                        continue  # Optuna refuses this combination
                    for direction in ("maximize", "minimize"):
                        settings.append((name, min_resource, max_resource, eta, bootstrap, direction))
rng = random.Random(20261202)
scenarios = []
for name, min_resource, max_resource, eta, bootstrap, direction in settings:
    n_trials, n_steps = 30, 12
    values = []
    for t in range(n_trials):
        target, speed = rng.random(), rng.uniform(0.1, 0.8)
        steps = n_steps if rng.random() < 0.8 else rng.randrange(3, n_steps)  # some trials stop early (patience)
        curve = [round(target * (1 - math.exp(-speed * (s + 1))) + rng.gauss(0, 0.02), 6) for s in range(steps)]
        if rng.random() < 0.04:
            curve[rng.randrange(steps)] = float("nan")
        values.append(curve)
    sampler = Recorder()
    pruner = optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                            reduction_factor=eta, bootstrap_count=bootstrap)
    study = optuna.create_study(study_name=name, direction=direction, sampler=sampler, pruner=pruner)
    pruned_at = replay(study, values)
    brackets = [pruner._get_bracket_id(study, t) for t in study.get_trials(deepcopy=False)]
    scenarios.append({"study": name, "min_resource": min_resource, "max_resource": 0 if max_resource == "auto" else max_resource,
                      "reduction_factor": eta, "bootstrap_count": bootstrap, "direction": direction,
                      "n_brackets": pruner._n_brackets, "budgets": pruner._trial_allocation_budgets, "brackets": brackets,
                      "values": [[None if math.isnan(v) else v for v in c] for c in values],
                      "pruned_at": pruned_at, "seen": sampler.seen})
# Bracket counts over a grid of max_resource (1..1000) × min_resource (1..4) × reduction_factor (2..6), in that
# order: Optuna floors a float logarithm, and at exact powers (log_3 243) that depends on the last bit.
counts = []
for max_resource in range(1, 1001):
    for min_resource in range(1, 5):
        for eta in range(2, 7):
            pruner = optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource, reduction_factor=eta)
            pruner._try_initialization(None)
            counts.append(pruner._n_brackets)
with open("hyperband_golden.json", "w") as f:
    json.dump({"generator": "make_hyperband_golden.py, optuna " + optuna.__version__, "scenarios": scenarios,
               "n_brackets": counts}, f)
print(len(scenarios), "scenarios,", sum(sum(a >= 0 for a in s["pruned_at"]) for s in scenarios), "pruned trials,",
      sum(sum(len(x) < i + 1 for i, x in enumerate(s["seen"])) for s in scenarios), "samplings shown part of the study")
