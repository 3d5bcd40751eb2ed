package tpe

import (
	"math"
	"math/rand/v2"
	"sort"

	"github.com/readsweep/readsweep/sweep/storage"
)

// parzen is a mixture of product kernels, one per observation plus the
// prior, over the transformed space (ln for log parameters, bins widened by
// half a step for stepped ones). reference: parzen_estimator.py.
type parzen struct {
	logW  []float64 // K log mixture weights
	dims  []dim
	nKern int
}

type dim struct {
	d      storage.Distribution
	lo, hi float64   // transformed bounds
	mu, sd []float64 // K kernels (numeric)
	logP   [][]float64
	// logP[k][c]: log probability of choice c under kernel k (categorical)
}

func newParzen(obs []observation, dists []storage.Distribution, priorWeight float64) *parzen {
	m := len(obs)
	k := m + 1
	w := weights(m)
	w = append(w, priorWeight)
	var sum float64
	for _, v := range w {
		sum += v
	}
	p := &parzen{logW: make([]float64, k), nKern: k}
	for i, v := range w {
		p.logW[i] = math.Log(v / sum)
	}
	for di, d := range dists {
		xs := make([]float64, m)
		for i, o := range obs {
			xs[i] = o.x[di]
		}
		if d.Kind == storage.CategoricalDist {
			p.dims = append(p.dims, categoricalDim(d, xs, priorWeight))
		} else {
			p.dims = append(p.dims, numericDim(d, xs))
		}
	}
	return p
}

func transformedBounds(d storage.Distribution) (lo, hi float64) {
	lo, hi = d.Low, d.High
	if d.Step != 0 {
		lo, hi = lo-d.Step/2, hi+d.Step/2
	}
	if d.Log {
		lo, hi = math.Log(lo), math.Log(hi)
	}
	return lo, hi
}

func transform(d storage.Distribution, v float64) float64 {
	if d.Log {
		return math.Log(v)
	}
	return v
}

// numericDim places a kernel on each observation with the neighbour
// bandwidth rule and the magic clip, plus the wide prior kernel.
func numericDim(d storage.Distribution, xs []float64) dim {
	lo, hi := transformedBounds(d)
	m := len(xs)
	dm := dim{d: d, lo: lo, hi: hi, mu: make([]float64, m+1), sd: make([]float64, m+1)}
	for i, x := range xs {
		dm.mu[i] = transform(d, x)
	}
	if m > 0 {
		order := make([]int, m)
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return dm.mu[order[a]] < dm.mu[order[b]] })
		sorted := make([]float64, m+2)
		sorted[0], sorted[m+1] = lo, hi
		for i, j := range order {
			sorted[i+1] = dm.mu[j]
		}
		for i, j := range order {
			dm.sd[j] = math.Max(sorted[i+1]-sorted[i], sorted[i+2]-sorted[i+1])
		}
		if m >= 2 {
			dm.sd[order[0]] = sorted[2] - sorted[1]
			dm.sd[order[m-1]] = sorted[m] - sorted[m-1]
		}
		minSD := (hi - lo) / math.Min(100, float64(m+2))
		for i := 0; i < m; i++ {
			dm.sd[i] = math.Min(math.Max(dm.sd[i], minSD), hi-lo)
		}
	}
	dm.mu[m], dm.sd[m] = (lo+hi)/2, hi-lo
	return dm
}

func categoricalDim(d storage.Distribution, xs []float64, priorWeight float64) dim {
	m, c := len(xs), len(d.Choices)
	dm := dim{d: d, logP: make([][]float64, m+1)}
	for i, x := range xs {
		row := make([]float64, c)
		base := priorWeight / float64(m+1)
		total := base*float64(c) + 1
		for j := range row {
			row[j] = math.Log(base / total)
		}
		row[int(x)] = math.Log((base + 1) / total)
		dm.logP[i] = row
	}
	prior := make([]float64, c)
	for j := range prior {
		prior[j] = -math.Log(float64(c))
	}
	dm.logP[m] = prior
	return dm
}

// sample draws one point (internal values) from the mixture.
func (p *parzen) sample(rng *rand.Rand) []float64 {
	u := rng.Float64()
	k := p.nKern - 1
	var acc float64
	for i, lw := range p.logW {
		acc += math.Exp(lw)
		if u < acc {
			k = i
			break
		}
	}
	x := make([]float64, len(p.dims))
	for i, dm := range p.dims {
		if dm.d.Kind == storage.CategoricalDist {
			r := rng.Float64()
			var acc float64
			x[i] = float64(len(dm.logP[k]) - 1)
			for c, lp := range dm.logP[k] {
				acc += math.Exp(lp)
				if r < acc {
					x[i] = float64(c)
					break
				}
			}
			continue
		}
		v := truncNormSample(rng, dm.mu[k], dm.sd[k], dm.lo, dm.hi)
		if dm.d.Log {
			v = math.Exp(v)
		}
		if dm.d.Step != 0 {
			v = snap(v, dm.d)
		} else {
			v = math.Min(math.Max(v, dm.d.Low), dm.d.High)
		}
		x[i] = v
	}
	return x
}

// logPDF returns log density (log mass for stepped and categorical
// dimensions) of internal point x. No Jacobian is applied for log
// parameters: it cancels in l(x)/g(x).
func (p *parzen) logPDF(x []float64) float64 {
	terms := make([]float64, p.nKern)
	copy(terms, p.logW)
	for i, dm := range p.dims {
		switch {
		case dm.d.Kind == storage.CategoricalDist:
			c := int(x[i])
			for k := range terms {
				terms[k] += dm.logP[k][c]
			}
		case dm.d.Step != 0:
			a, b := x[i]-dm.d.Step/2, x[i]+dm.d.Step/2
			if dm.d.Log {
				a, b = math.Log(math.Max(a, 0)), math.Log(b)
			}
			for k := range terms {
				mu, sd := dm.mu[k], dm.sd[k]
				terms[k] += logNormMass((a-mu)/sd, (b-mu)/sd) - logNormMass((dm.lo-mu)/sd, (dm.hi-mu)/sd)
			}
		default:
			xt := transform(dm.d, x[i])
			for k := range terms {
				mu, sd := dm.mu[k], dm.sd[k]
				z := (xt - mu) / sd
				terms[k] += -0.5*z*z - math.Log(sd*math.Sqrt(2*math.Pi)) - logNormMass((dm.lo-mu)/sd, (dm.hi-mu)/sd)
			}
		}
	}
	return logSumExp(terms)
}

func logSumExp(xs []float64) float64 {
	mx := math.Inf(-1)
	for _, x := range xs {
		mx = math.Max(mx, x)
	}
	if math.IsInf(mx, -1) {
		return mx
	}
	var s float64
	for _, x := range xs {
		s += math.Exp(x - mx)
	}
	return mx + math.Log(s)
}

// normCDF is Φ(z), accurate in the lower tail.
func normCDF(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

// logNormMass returns ln(Φ(b) − Φ(a)) for a ≤ b, using whichever tail keeps
// precision.
func logNormMass(a, b float64) float64 {
	var mass float64
	switch {
	case a >= 0:
		mass = normCDF(-a) - normCDF(-b)
	case b <= 0:
		mass = normCDF(b) - normCDF(a)
	default:
		mass = 1 - normCDF(a) - normCDF(-b)
	}
	if mass <= 0 {
		return math.Inf(-1)
	}
	return math.Log(mass)
}

// truncNormSample draws from N(mu, sd²) truncated to [lo, hi] by inverting
// the CDF.
func truncNormSample(rng *rand.Rand, mu, sd, lo, hi float64) float64 {
	a, b := (lo-mu)/sd, (hi-mu)/sd
	flip := false
	if a >= 0 { // both bounds in the upper tail: mirror for precision
		a, b, flip = -b, -a, true
	}
	pa, pb := normCDF(a), normCDF(b)
	u := pa + (pb-pa)*rng.Float64()
	z := -math.Sqrt2 * math.Erfcinv(2*u)
	if math.IsNaN(z) || math.IsInf(z, 0) {
		z = a
	}
	z = math.Min(math.Max(z, a), b)
	if flip {
		z = -z
	}
	return mu + sd*z
}
