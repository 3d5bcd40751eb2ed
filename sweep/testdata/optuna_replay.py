"""Replays a parallel run's prune checks through Optuna's own pruner (pruning_test.go).

    /usr/bin/python3 optuna_replay.py EVENTS.json SQLITE_URL

EVENTS.json holds the pruner's settings, the study's name and direction, and the events in the order the
orchestrator's checks saw them: ["ask", n], ["tell", n, state, value], ["report", n, step, value, pruned]. Each
report is asked of Optuna's pruner on an in-memory study; every decision must agree. Then the run's database is
opened with Optuna, and every trial's completed_rung_k system attributes there must equal those Optuna recorded.
Prints one line per disagreement and exits 1 if there is any.
"""
import json, math, sys
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
run = json.load(open(sys.argv[1]))
p = run["pruner"]
if p["name"] == "asha":
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=p["min_resource"] or "auto", reduction_factor=p["reduction_factor"],
        min_early_stopping_rate=p["min_early_stopping_rate"], bootstrap_count=p["bootstrap_count"])
else:
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=p["min_resource"], max_resource=p["max_resource"] or "auto",
        reduction_factor=p["reduction_factor"], bootstrap_count=p["bootstrap_count"])
study = optuna.create_study(study_name=run["study"], direction=run["direction"], pruner=pruner)
trials, bad, checks = {}, [], 0
for e in run["events"]:
    if e[0] == "ask":
        trials[e[1]] = study.ask()
        if trials[e[1]].number != e[1]:
            bad.append("asked trial %d, Optuna numbered it %d" % (e[1], trials[e[1]].number))
    elif e[0] == "tell":
        state = optuna.trial.TrialState[e[2]]
        study.tell(trials[e[1]], e[3] if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    else:
        _, n, step, value, pruned = e
        trials[n].report(float("nan") if value is None else value, step)
        checks += 1
        if trials[n].should_prune() != pruned:
            bad.append("trial %d at step %d (%r): sweep pruned %s, Optuna %s" % (n, step, value, pruned, not pruned))
# The tables are Optuna 3.2's; Debian's 3.1 reads them, once told not to refuse the newer version stamp.
storage = optuna.storages.RDBStorage(sys.argv[2], skip_compatibility_check=True)
stored = optuna.load_study(study_name=run["study"], storage=storage)
for mine, ours in zip(study.get_trials(deepcopy=False), stored.get_trials(deepcopy=False)):
    want = {k: v for k, v in mine.system_attrs.items() if k.startswith("completed_rung_")}
    got = {k: v for k, v in ours.system_attrs.items() if k.startswith("completed_rung_")}
    if got != want:
        bad.append("trial %d: the database has rungs %r, Optuna recorded %r" % (ours.number, got, want))
print("%d checks replayed, %d disagreements" % (checks, len(bad)))
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
