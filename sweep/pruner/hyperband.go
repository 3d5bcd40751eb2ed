package pruner

import (
	"hash/crc32"
	"math"
	"math/big"
	"strconv"

	"github.com/readsweep/readsweep/sweep/storage"
)

// Hyperband is Optuna's HyperbandPruner (optuna/pruners/_hyperband.py): n
// = ⌊log_η(max_resource / min_resource)⌋ + 1 brackets, bracket b an
// asynchronous successive-halving pruner with min_early_stopping_rate b.
// A trial belongs to one bracket, picked by the CRC-32 of
// "<study name>_<trial number>" modulo the sum of the brackets' trial
// budgets ⌈n·η^s / (s + 1)⌉ (s = n − 1 − b), and competes only with the
// trials of its bracket. The sampler, too, sees only the new trial's
// bracket (SamplerTrials), as Optuna hands its samplers a bracket study.
//
// Optuna sets the brackets up at the first check that can size them: at
// once with a fixed max_resource; with "auto", at the first check that
// finds a COMPLETE trial, from the COMPLETE trials' last step + 1. Until
// then nothing is pruned and every trial is in bracket 0, so a sampler
// sees them all. Here too, per study, for the pruner's life.
type Hyperband struct {
	MinResource     int // steps of the first rung of bracket 0 (1)
	MaxResource     int // 0: auto
	ReductionFactor int // η (3)
	BootstrapCount  int // trials that must reach a rung before any goes on (0)

	sized sizes // max_resource per study, once set up
}

// NewHyperband returns the pruner with Optuna's defaults.
func NewHyperband() *Hyperband { return &Hyperband{MinResource: 1, ReductionFactor: 3} }

// brackets is the pruner once set up: each bracket's trial budget.
type brackets struct {
	budgets []int
	total   int
}

// setUp sets the study's brackets up, as Optuna's _try_initialization does,
// or returns them as they were set up before; false while they cannot be.
func (h *Hyperband) setUp(study storage.Study, trials []storage.FrozenTrial) (brackets, bool) {
	maxRes, ok := h.sized.get(study.ID, func() (int, bool) {
		if h.MaxResource > 0 {
			return h.MaxResource, true
		}
		last, ok := lastCompleteStep(trials)
		return last + 1, ok
	})
	if !ok {
		return brackets{}, false
	}
	return h.bracketsFor(maxRes)
}

// bracketsFor sizes the brackets for maxRes; false when there are none
// (max_resource below min_resource: Optuna never prunes).
func (h *Hyperband) bracketsFor(maxRes int) (brackets, bool) {
	eta := max(h.ReductionFactor, 2)
	minRes := max(h.MinResource, 1)
	// Python's math.log(x, base) is log(x) / log(base) in floats, with
	// glibc's log, which rounds correctly where Go's math.Log may be an ulp
	// off: log_3 243 is 4.999999999999999 there, so Optuna makes 5 brackets,
	// not 6.
	n := int(math.Floor(roundedLog(float64(maxRes)/float64(minRes))/roundedLog(float64(eta)))) + 1
	var b brackets
	for bracket := range max(n, 0) {
		s := n - 1 - bracket
		budget := int(math.Ceil(float64(n) * math.Pow(float64(eta), float64(s)) / float64(s+1)))
		b.budgets = append(b.budgets, budget)
		b.total += budget
	}
	return b, b.total > 0
}

// of is the bracket of trial number in study.
func (b brackets) of(study storage.Study, number int) int {
	n := int(crc32.ChecksumIEEE([]byte(study.Name+"_"+strconv.Itoa(number))) % uint32(b.total))
	for bracket, budget := range b.budgets {
		n -= budget
		if n < 0 {
			return bracket
		}
	}
	return len(b.budgets) - 1 // unreachable: n < total
}

func (b brackets) members(study storage.Study, trials []storage.FrozenTrial, bracket int) []storage.FrozenTrial {
	var out []storage.FrozenTrial
	for _, t := range trials {
		if b.of(study, t.Number) == bracket {
			out = append(out, t)
		}
	}
	return out
}

// Bracket returns the bracket of trial number, and false while the
// study's brackets are not set up (every trial is then in bracket 0).
func (h *Hyperband) Bracket(study storage.Study, number int) (int, bool) {
	b, ok := h.current(study)
	if !ok {
		return 0, false
	}
	return b.of(study, number), true
}

// current is the study's brackets if a check has set them up.
func (h *Hyperband) current(study storage.Study) (brackets, bool) {
	maxRes, ok := h.sized.known(study.ID)
	if !ok {
		return brackets{}, false
	}
	return h.bracketsFor(maxRes)
}

// Prune reports whether trial, whose latest report is its last step, should
// stop: successive halving among the trials of its bracket. It returns the
// rung values the check records on the trial.
func (h *Hyperband) Prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) (bool, map[string]any) {
	b, ok := h.setUp(study, trials)
	if !ok {
		return false, nil
	}
	bracket := b.of(study, trial.Number)
	sh := SuccessiveHalving{MinResource: h.MinResource, ReductionFactor: h.ReductionFactor,
		MinEarlyStoppingRate: bracket, BootstrapCount: h.BootstrapCount}
	return sh.judge(study, b.members(study, trials, bracket), trial, max(h.MinResource, 1))
}

// SamplerTrials returns the trials a sampler may learn from when it
// suggests trial number's parameters: those of its bracket once a check
// has set the study's brackets up, else all.
func (h *Hyperband) SamplerTrials(study storage.Study, trials []storage.FrozenTrial, number int) []storage.FrozenTrial {
	b, ok := h.current(study)
	if !ok {
		return trials
	}
	return b.members(study, trials, b.of(study, number))
}

// roundedLog is the natural logarithm of x > 0 rounded to the nearest
// float64, from a 128-bit series: ln x = e·ln 2 + 2·atanh((m−1)/(m+1)) for
// x = m·2^e with m in [√½, √2).
func roundedLog(x float64) float64 {
	const prec = 128
	num := func(v float64) *big.Float { return new(big.Float).SetPrec(prec).SetFloat64(v) }
	// lnOf is ln m for m near 1 (or 2): 2·Σ z^(2k+1)/(2k+1), z = (m−1)/(m+1).
	lnOf := func(m float64) *big.Float {
		z := num(0).Quo(num(0).Sub(num(m), num(1)), num(0).Add(num(m), num(1)))
		z2 := num(0).Mul(z, z)
		term, sum := num(0).Set(z), num(0).Set(z)
		for k := 3.0; term.Sign() != 0; k += 2 {
			term.Mul(term, z2)
			add := num(0).Quo(term, num(k))
			if add.MantExp(nil) < sum.MantExp(nil)-prec-8 {
				break
			}
			sum.Add(sum, add)
		}
		return sum.Mul(sum, num(2))
	}
	m, e := math.Frexp(x)
	if m < math.Sqrt2/2 {
		m, e = 2*m, e-1
	}
	sum := lnOf(m)
	if e != 0 {
		sum.Add(sum, num(0).Mul(lnOf(2), num(float64(e))))
	}
	f, _ := sum.Float64()
	return f
}
