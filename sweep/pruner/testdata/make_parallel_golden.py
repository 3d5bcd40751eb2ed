"""Golden decisions of Optuna's SuccessiveHalvingPruner and HyperbandPruner with trials running at once, for
pruner.SuccessiveHalving and pruner.Hyperband (parallel_test.go).

    cd sweep/pruner/testdata && /usr/bin/python3 make_parallel_golden.py   # Debian's python3-optuna

Each scenario keeps `workers` trials running, as `sweep run` with parallel > 1 does, and interleaves their events
at random (seeded): a running trial reports its next value and asks should_prune; a trial that has made its last
report (or was pruned) is told later, at a random point, as the orchestrator learns a trial's end only from its
final line. Reports are made every `stride` steps, as with eval_steps, and some trials stop early (patience), so
that an auto min_resource or max_resource depends on which trials have completed when the pruner first sizes
itself. The events are the golden: every check's decision, each new trial's sampler view (Hyperband), and at the
end every trial's completed_rung_k system attributes. In-memory storage, as for make_asha_golden.py.
"""
import json, math, random
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Recorder(optuna.samplers.RandomSampler):
    """A random sampler that notes which trials each new trial's sampling saw."""

    def __init__(self):
        super().__init__(seed=0)
        self.seen = []

    def infer_relative_search_space(self, study, trial):
        self.seen.append(sorted(t.number for t in study.get_trials(deepcopy=False)))
        return {}


def curves(rng, n_trials, n_reports):
    out = []
    for _ in range(n_trials):
        target, speed = rng.random(), rng.uniform(0.1, 0.8)
        n = n_reports if rng.random() < 0.7 else rng.randrange(2, n_reports)
        curve = [round(target * (1 - math.exp(-speed * (s + 1))) + rng.gauss(0, 0.02), 6) for s in range(n)]
        if rng.random() < 0.04:
            curve[rng.randrange(n)] = float("nan")
        out.append(curve)
    return out


def run(study, values, workers, stride, rng):
    """Returns the events: ("ask", n), ("report", n, step, value, pruned), ("tell", n, state)."""
    events, running, done, pending = [], {}, {}, list(range(len(values)))
    while pending or running or done:
        while pending and len(running) + len(done) < workers:
            trial = study.ask()
            running[trial.number] = (trial, values[pending.pop(0)], [0])
            events.append(["ask", trial.number])
        choices = [("report", n) for n in running] + [("tell", n) for n in done]
        op, n = rng.choice(sorted(choices))
        if op == "tell":
            trial, state, value = done.pop(n)
            study.tell(trial, value, state=state)
            events.append(["tell", n, state.name])
            continue
        trial, curve, pos = running[n]
        i = pos[0]
        step, v = (i + 1) * stride, curve[i]
        trial.report(v, step)
        pruned = trial.should_prune()
        events.append(["report", n, step, None if math.isnan(v) else v, pruned])
        pos[0] += 1
        if pruned or pos[0] == len(curve):
            del running[n]
            if pruned:
                done[n] = (trial, optuna.trial.TrialState.PRUNED, None)
            elif math.isnan(curve[-1]):
                done[n] = (trial, optuna.trial.TrialState.FAIL, None)
            else:
                done[n] = (trial, optuna.trial.TrialState.COMPLETE, curve[-1])
    return events


def rungs(study):
    return [{k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung_")} for t in study.trials]


rng = random.Random(20261207)
scenarios = []
for workers in (3, 5):
    for stride in (1, 25):
        for min_resource in ("auto", 1, 3):
            for eta in (2, 3, 4):
                for rate in (0, 1):
                    for bootstrap in (0, 2):
                        if bootstrap and min_resource == "auto":
                            continue  # Optuna refuses this combination
                        direction = rng.choice(("maximize", "minimize"))
                        values = curves(rng, 24, 12)
                        pruner = optuna.pruners.SuccessiveHalvingPruner(
                            min_resource=min_resource, reduction_factor=eta, min_early_stopping_rate=rate,
                            bootstrap_count=bootstrap)
                        study = optuna.create_study(study_name="asha", direction=direction, pruner=pruner)
                        events = run(study, values, workers, stride, rng)
                        scenarios.append({"pruner": "asha", "study": "asha", "workers": workers, "stride": stride,
                                          "min_resource": 0 if min_resource == "auto" else min_resource,
                                          "reduction_factor": eta, "min_early_stopping_rate": rate,
                                          "bootstrap_count": bootstrap, "direction": direction,
                                          "events": events, "rungs": rungs(study)})
        for name in ("read/hidden-256/sst2", "lora/rank-8/rte"):
            for min_resource in (1, 2):
                for max_resource in ("auto", 12 * stride, 40 * stride):
                    for eta in (2, 3):
                        bootstrap = 0 if max_resource == "auto" else rng.choice((0, 2))
                        direction = rng.choice(("maximize", "minimize"))
                        values = curves(rng, 30, 12)
                        sampler = Recorder()
                        pruner = optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                                                reduction_factor=eta, bootstrap_count=bootstrap)
                        study = optuna.create_study(study_name=name, direction=direction, sampler=sampler, pruner=pruner)
                        events = run(study, values, workers, stride, rng)
                        scenarios.append({"pruner": "hyperband", "study": name, "workers": workers, "stride": stride,
                                          "min_resource": min_resource,
                                          "max_resource": 0 if max_resource == "auto" else max_resource,
                                          "reduction_factor": eta, "bootstrap_count": bootstrap,
                                          "direction": direction, "events": events, "rungs": rungs(study),
                                          "seen": sampler.seen})
with open("parallel_golden.json", "w") as f:
    json.dump({"generator": "make_parallel_golden.py, optuna " + optuna.__version__, "scenarios": scenarios}, f)
reports = [e for s in scenarios for e in s["events"] if e[0] == "report"]
print(len(scenarios), "scenarios,", len(reports), "checks,", sum(e[4] for e in reports), "pruned")
