package glue

import (
	"math"
	"sort"
)

// Accuracy is the fraction of predictions equal to the gold label; an
// invalid prediction (-1) is wrong.
func Accuracy(pred, gold []int) float64 {
	mustSameLen("Accuracy", len(pred), len(gold))
	if len(gold) == 0 {
		return 0
	}
	n := 0
	for i := range gold {
		if pred[i] == gold[i] {
			n++
		}
	}
	return float64(n) / float64(len(gold))
}

// F1 is the F1 score of the positive class 1. An invalid prediction (not 0
// or 1) is replaced by the opposite of the gold label, as T5's
// f1_score_with_invalid does; F1 is 0 when there is no positive at all.
func F1(pred, gold []int) float64 {
	mustSameLen("F1", len(pred), len(gold))
	var tp, fp, fn int
	for i, g := range gold {
		p := pred[i]
		if p != 0 && p != 1 {
			p = 1 - g
		}
		switch {
		case p == 1 && g == 1:
			tp++
		case p == 1:
			fp++
		case g == 1:
			fn++
		}
	}
	if 2*tp+fp+fn == 0 {
		return 0
	}
	return 2 * float64(tp) / float64(2*tp+fp+fn)
}

// MatthewsCorr is the multiclass Matthews correlation of scikit-learn's
// matthews_corrcoef; an invalid prediction is a class of its own. It is 0
// when all predictions (or all gold labels) are one class.
func MatthewsCorr(pred, gold []int) float64 {
	mustSameLen("MatthewsCorr", len(pred), len(gold))
	t, p := map[int]float64{}, map[int]float64{}
	var c, s float64
	for i, g := range gold {
		t[g]++
		p[pred[i]]++
		if pred[i] == g {
			c++
		}
		s++
	}
	var tp, pp, tt float64
	for k, tk := range t {
		tp += tk * p[k]
		tt += tk * tk
	}
	for _, pk := range p {
		pp += pk * pk
	}
	covPP, covTT := s*s-pp, s*s-tt
	if covPP*covTT == 0 {
		return 0
	}
	return (c*s - tp) / math.Sqrt(covTT*covPP)
}

// Pearson is the correlation coefficient of x and y; 0 when either is
// constant (where scipy returns NaN).
func Pearson(x, y []float64) float64 {
	mustSameLen("Pearson", len(x), len(y))
	n := float64(len(x))
	if n < 2 {
		return 0
	}
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0
	}
	r := sxy / math.Sqrt(sxx*syy)
	return math.Max(-1, math.Min(1, r))
}

// Spearman is the Pearson correlation of the ranks of x and y, tied values
// sharing the mean of their ranks (scipy.stats.spearmanr).
func Spearman(x, y []float64) float64 {
	mustSameLen("Spearman", len(x), len(y))
	return Pearson(ranks(x), ranks(y))
}

// ranks returns 1-based ranks with ties averaged.
func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		avg := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = avg
		}
		i = j + 1
	}
	return r
}

func mustSameLen(op string, a, b int) {
	if a != b {
		panic("glue: " + op + ": prediction and gold lengths differ")
	}
}

// Scores maps metric names to values ×100; "score" is the paper's
// per-task number.
type Scores map[string]float64

// Evaluate scores predictions against the gold examples with the task's
// metric. STS-B is scored against the gold scores (GLUE's definition);
// "pearson_t5" and "spearman_t5" score against T5's rounded targets, which
// T5's own evaluation uses.
func (t *Task) Evaluate(preds []Prediction, gold []Example) Scores {
	mustSameLen("Evaluate", len(preds), len(gold))
	s := Scores{}
	if t.Regression() {
		x, y, yr := make([]float64, len(gold)), make([]float64, len(gold)), make([]float64, len(gold))
		for i, g := range gold {
			x[i] = preds[i].Score
			y[i] = float64(g.Score)
			yr[i] = float64(float32(math.RoundToEven(float64(g.Score*5))) / 5)
		}
		s["pearson"], s["spearman"] = 100*Pearson(x, y), 100*Spearman(x, y)
		s["pearson_t5"], s["spearman_t5"] = 100*Pearson(x, yr), 100*Spearman(x, yr)
		s["score"] = (s["pearson"] + s["spearman"]) / 2
		return s
	}
	p, g := make([]int, len(gold)), make([]int, len(gold))
	for i := range gold {
		p[i], g[i] = preds[i].Label, gold[i].Label
	}
	s["accuracy"] = 100 * Accuracy(p, g)
	switch t.Metric {
	case MetricMCC:
		s["matthews_correlation"] = 100 * MatthewsCorr(p, g)
		s["score"] = s["matthews_correlation"]
	case MetricF1Accuracy:
		s["f1"] = 100 * F1(p, g)
		s["score"] = (s["f1"] + s["accuracy"]) / 2
	default:
		s["score"] = s["accuracy"]
	}
	return s
}
