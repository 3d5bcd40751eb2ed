"""The trial loop the golden scripts share (make_asha_golden.py, make_hyperband_golden.py)."""
import math
import optuna


def replay(study, values):
    """Runs one trial per curve, one after another: report each value, ask should_prune after each report, stop
    when pruned; a trial whose last value is NaN fails. Returns the step each trial was pruned at, or -1."""
    pruned_at = []
    for curve in values:
        trial = study.ask()
        at = -1
        for step, v in enumerate(curve):
            trial.report(v, step)
            if trial.should_prune():
                at = step
                break
        if at >= 0:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif math.isnan(curve[-1]):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, curve[-1])
        pruned_at.append(at)
    return pruned_at
