package dashboard

import (
	"math"
	"reflect"
	"slices"
	"sort"

	"github.com/readsweep/readsweep/sweep/storage"
)

// Parameter importance is PED-ANOVA (Watanabe et al., "PED-ANOVA:
// Efficiently Quantifying Hyperparameter Importance in Arbitrary Subspaces",
// IJCAI 2023; its conditional form, arXiv 2601.20800), computed as Optuna's
// PedAnovaImportanceEvaluator does with its defaults. That evaluator is
// Optuna's default since 4.x, so the numbers here are the ones
// `optuna.importance.get_param_importances(study)` prints and that
// optuna-dashboard shows for the same trials. Unlike fANOVA it needs no
// random forest: it is deterministic, and a test holds it to Optuna's
// numbers (testdata/ped_anova.json, written by scripts/peers/ped_anova.py).
//
// In short: the best 10 % of the COMPLETE trials are the "top" set. For each
// parameter, a Parzen estimator of the top trials' values and one of all
// trials' values are fitted on a grid of at most 50 cells, and the
// importance is the Pearson χ² divergence between them: a parameter whose
// good values look like all its values does not matter. Trials that lack
// the parameter, or drew it from another domain, form their own regimes
// (the conditional form). The importances are normalised to sum to 1.
const (
	pedTargetQuantile = 0.1 // γ' in the paper: what "top" means
	pedGridSteps      = 50  // cells a numerical domain is cut into
	pedPriorWeight    = 1.0 // weight of the uniform prior kernel
	pedMinInRegime    = 2   // trials a regime needs to count
)

// Importance is one parameter's share.
type Importance struct {
	Param string  `json:"param"`
	Value float64 `json:"value"`
}

// Importances returns each parameter's importance to reaching the study's
// best 10 %, largest first, summing to 1. The values are the first
// objective's, in the study's direction (Optuna's target=values[0] for a
// multi-objective study). Nil when no parameter was sampled.
func Importances(trials []storage.FrozenTrial, dir storage.Direction) []Importance {
	var complete, scored []storage.FrozenTrial
	for _, t := range trials {
		if t.State != storage.Complete {
			continue
		}
		complete = append(complete, t)
		if t.Value != nil && !math.IsNaN(*t.Value) && !math.IsInf(*t.Value, 0) {
			scored = append(scored, t)
		}
	}
	var params []string
	for _, t := range complete {
		for name := range t.Distributions {
			if !slices.Contains(params, name) {
				params = append(params, name)
			}
		}
	}
	if len(params) == 0 {
		return nil
	}
	sort.Strings(params)
	raw := make([]float64, len(params))
	if len(scored) > 1 {
		top := topQuantile(scored, dir, pedTargetQuantile)
		inTop := map[int64]bool{}
		for _, t := range top {
			inTop[t.ID] = true
		}
		shrink := float64(len(top)) / float64(len(scored))
		for i, name := range params {
			for _, regime := range regimes(name, scored) {
				var topInRegime []storage.FrozenTrial
				for _, t := range regime.trials {
					if inTop[t.ID] {
						topInRegime = append(topInRegime, t)
					}
				}
				if regime.dist == nil || regime.dist.Single() || len(topInRegime) == 0 {
					continue
				}
				alpha := float64(len(topInRegime)) / float64(len(top))
				beta := float64(len(regime.trials)) / float64(len(scored))
				raw[i] += alpha * alpha / beta * pearsonDivergence(name, *regime.dist, topInRegime, regime.trials)
			}
			raw[i] *= shrink * shrink
		}
	}
	sum := 0.0
	for _, v := range raw {
		sum += v
	}
	out := make([]Importance, len(params))
	for i, name := range params {
		if sum == 0 {
			out[i] = Importance{name, 1 / float64(len(params))}
		} else {
			out[i] = Importance{name, raw[i] / sum}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Value > out[j].Value })
	return out
}

// topQuantile keeps the trials at least as good as the ⌈q·n⌉-th best (ties
// included), as Optuna's inverted-CDF quantile filter does.
func topQuantile(trials []storage.FrozenTrial, dir storage.Direction, q float64) []storage.FrozenTrial {
	sign := 1.0
	if dir == storage.Maximize {
		sign = -1
	}
	losses := make([]float64, len(trials))
	for i, t := range trials {
		losses[i] = sign * *t.Value
	}
	sorted := slices.Clone(losses)
	slices.Sort(sorted)
	cutoff := sorted[int(math.Ceil(q*float64(len(losses))))-1]
	var out []storage.FrozenTrial
	for i, t := range trials {
		if losses[i] <= cutoff {
			out = append(out, t)
		}
	}
	return out
}

// regime is the trials that drew a parameter from one domain; dist is nil
// for those that never drew it.
type regime struct {
	dist   *storage.Distribution
	trials []storage.FrozenTrial
}

// regimes groups trials by the domain they drew name from, in order of
// first appearance, dropping groups too small to estimate. A trial whose
// stored value lies outside its domain, or whose domain is not one Optuna
// accepts (a damaged or hand-edited database), is left out of the
// parameter's estimate rather than allowed to index past a grid.
func regimes(name string, trials []storage.FrozenTrial) []regime {
	var out []regime
	for _, t := range trials {
		var dist *storage.Distribution
		if d, ok := t.Distributions[name]; ok {
			if d.Validate() != nil || !d.Contains(t.Params[name]) {
				continue
			}
			dist = &d
		}
		// A study has a handful of domains per parameter: a scan of them
		// beats encoding each trial's to find its group.
		i := slices.IndexFunc(out, func(r regime) bool { return sameDomain(r.dist, dist) })
		if i < 0 {
			i = len(out)
			out = append(out, regime{dist: dist})
		}
		out[i].trials = append(out[i].trials, t)
	}
	return slices.DeleteFunc(out, func(r regime) bool { return len(r.trials) < pedMinInRegime })
}

// sameDomain is Optuna's distribution equality; nil is "not drawn".
func sameDomain(a, b *storage.Distribution) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Kind == b.Kind && a.Low == b.Low && a.High == b.High && a.Log == b.Log && a.Step == b.Step &&
		slices.EqualFunc(a.Choices, b.Choices, sameChoice)
}

// sameChoice is Python's ==, which Optuna's equality of choices uses: True
// is 1 and False 0, an int equals its float.
func sameChoice(a, b any) bool {
	number := func(v any) (float64, bool) {
		switch x := v.(type) {
		case bool:
			if x {
				return 1, true
			}
			return 0, true
		case float64:
			return x, true
		}
		return 0, false
	}
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && (x == y || x != x && y != y) // NaN: the same choice in each trial's copy of the list
	}
	return reflect.DeepEqual(a, b) // strings and None (and whatever else a damaged row holds, without a panic)
}

// pearsonDivergence is Σ p_local·(p_top/p_local − 1)² over the grid.
func pearsonDivergence(name string, d storage.Distribution, top, local []storage.FrozenTrial) float64 {
	pTop := gridDensity(name, d, top)
	pLocal := gridDensity(name, d, local)
	sum := 0.0
	for i := range pTop {
		a, b := pTop[i]+1e-12, pLocal[i]+1e-12
		r := a/b - 1
		sum += b * (r * r)
	}
	return sum
}

// gridDensity is the Parzen estimator of the trials' values of name, with
// a uniform prior kernel, evaluated at each grid cell.
func gridDensity(name string, d storage.Distribution, trials []storage.FrozenTrial) []float64 {
	var counts []float64
	if d.Kind == storage.CategoricalDist {
		counts = make([]float64, len(d.Choices))
		for _, t := range trials {
			counts[int(t.Params[name])]++
		}
		return categoricalDensity(counts)
	}
	// Counted in float64 before the int: a domain of 2^63 steps (an int
	// seed, a float with step 1e-20) has more cells than an int holds.
	cells := float64(pedGridSteps)
	switch {
	case d.Kind == storage.IntDist && d.Log:
		cells = min(cells, math.Ceil(math.Log(d.High-d.Low+1)/math.Log(2))+1)
	case d.Step != 0:
		cells = min(cells, math.RoundToEven((d.High-d.Low)/d.Step)+1)
	}
	steps := int(cells)
	low, high := d.Low, d.High
	if d.Log {
		low, high = math.Log(low), math.Log(high)
	}
	width := (high - low) / float64(steps-1)
	counts = make([]float64, steps)
	for _, t := range trials {
		v := t.Params[name]
		if d.Log {
			v = math.Log(v)
		}
		// Ties at a midpoint go to the lower cell, as in Optuna.
		cell := int(math.Ceil((v-low)/width - 0.5))
		counts[min(max(cell, 0), steps-1)]++
	}
	return numericalDensity(counts)
}

// categoricalDensity mixes one kernel per observed choice (its count as
// weight) with the prior; each kernel puts 1 on its choice plus the prior
// weight spread over all choices.
func categoricalDensity(counts []float64) []float64 {
	var observed []int
	for i, c := range counts {
		if c > 0 {
			observed = append(observed, i)
		}
	}
	kernels := len(observed) + 1
	total := pedPriorWeight
	for _, i := range observed {
		total += counts[i]
	}
	rows, sums, weights := make([][]float64, kernels), make([]float64, kernels), make([]float64, kernels)
	for k := range kernels {
		rows[k] = make([]float64, len(counts))
		for j := range rows[k] {
			rows[k][j] = pedPriorWeight / float64(kernels)
		}
		weights[k] = pedPriorWeight / total
		if k < len(observed) {
			rows[k][observed[k]]++
			weights[k] = counts[observed[k]] / total
		}
		for _, v := range rows[k] {
			sums[k] += v
		}
	}
	out := make([]float64, len(counts))
	logs := make([]float64, kernels)
	for x := range counts {
		for k := range kernels {
			logs[k] = math.Log(rows[k][x]/sums[k]) + math.Log(weights[k])
		}
		out[x] = math.Exp(logSumExp(logs))
	}
	return out
}

// numericalDensity mixes a discrete truncated normal per occupied cell
// (its count as weight, Scott's-rule bandwidth) with a wide prior kernel
// centred on the grid.
func numericalDensity(counts []float64) []float64 {
	var cells, weights []float64
	for i, c := range counts {
		if c > 0 {
			cells = append(cells, float64(i))
			weights = append(weights, c)
		}
	}
	total := 0.0
	cum := make([]float64, len(weights))
	for i, w := range weights {
		total += w
		cum[i] = total
	}
	mean := 0.0
	for i := range cells {
		mean += cells[i] * weights[i]
	}
	mean /= total
	variance := 0.0
	for i := range cells {
		variance += (cells[i] - mean) * (cells[i] - mean) * weights[i]
	}
	sigma := math.Sqrt(variance / max(1, total-1))
	// Quartiles over the weighted cells: the first cell whose cumulative
	// count reaches ⌊n/4⌋, and the first that passes ⌊3n/4⌋.
	q1, _ := slices.BinarySearch(cum, math.Floor(total/4))
	q3 := sort.Search(len(cum), func(i int) bool { return cum[i] > math.Floor(total*3/4) })
	iqr := cells[min(len(cells)-1, q3)] - cells[q1]
	sigma = 1.059 * min(iqr/1.34, sigma) * math.Pow(total, -0.2)
	sigma = max(sigma, 0.5/1.64) // 1.64σ (90 %) always fits in the grid

	low, high := 0.0, float64(len(counts)-1)
	mus := append(slices.Clone(cells), (low+high)/2)
	sigmas := make([]float64, len(mus))
	for i := range cells {
		sigmas[i] = sigma
	}
	sigmas[len(cells)] = high - low + 1
	mix := append(slices.Clone(weights), pedPriorWeight)
	mixTotal := total + pedPriorWeight
	// Each kernel's mass over the whole grid and its mixture weight, once.
	norms, logMix := make([]float64, len(mus)), make([]float64, len(mus))
	for k := range mus {
		norms[k] = logGaussMass((low-0.5-mus[k])/sigmas[k], (high+0.5-mus[k])/sigmas[k])
		logMix[k] = math.Log(mix[k] / mixTotal)
	}
	out := make([]float64, len(counts))
	logs := make([]float64, len(mus))
	for x := range counts {
		for k := range mus {
			mass := logGaussMass((float64(x)-0.5-mus[k])/sigmas[k], (float64(x)+0.5-mus[k])/sigmas[k])
			logs[k] = mass - norms[k] + logMix[k]
		}
		out[x] = math.Exp(logSumExp(logs))
	}
	return out
}

func logSumExp(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = max(m, x)
	}
	if math.IsInf(m, -1) {
		m = 0
	}
	sum := 0.0
	for _, x := range xs {
		sum += math.Exp(x - m)
	}
	return math.Log(sum) + m
}

// logGaussMass is log(Φ(b) − Φ(a)), computed in whichever tail keeps its
// precision (the branches of Optuna's _truncnorm).
func logGaussMass(a, b float64) float64 {
	switch {
	case b <= 0:
		return logDiff(logNdtr(b), logNdtr(a))
	case a > 0:
		return logDiff(logNdtr(-a), logNdtr(-b))
	default:
		return math.Log1p(-ndtr(a) - ndtr(-b))
	}
}

func logDiff(logP, logQ float64) float64 { return logP + math.Log1p(-math.Exp(logQ-logP)) }

func ndtr(a float64) float64 { return 0.5 + 0.5*math.Erf(a/math.Sqrt2) }

// ndtrTails is Φ(a) with erfc in the tails, where erf loses the digits.
func ndtrTails(a float64) float64 {
	x := a / math.Sqrt2
	switch {
	case x < -1/math.Sqrt2:
		return 0.5 * math.Erfc(-x)
	case x < 1/math.Sqrt2:
		return 0.5 + 0.5*math.Erf(x)
	default:
		return 1 - 0.5*math.Erfc(x)
	}
}

// logNdtr is log Φ(a), with the asymptotic series far in the left tail.
func logNdtr(a float64) float64 {
	if a > 6 {
		return -ndtrTails(-a)
	}
	if a > -20 {
		return math.Log(ndtrTails(a))
	}
	logLHS := -0.5*a*a - math.Log(-a) - 0.5*math.Log(2*math.Pi)
	last, rhs, numerator, factor := 0.0, 1.0, 1.0, 1.0
	sign := 1.0
	for i := 1; math.Abs(last-rhs) > 0x1p-52; i++ {
		last = rhs
		sign = -sign
		factor *= 1 / (a * a)
		numerator *= float64(2*i - 1)
		rhs += sign * numerator * factor
	}
	return logLHS + math.Log(rhs)
}
