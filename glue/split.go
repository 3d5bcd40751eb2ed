package glue

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
)

// SmallTrain is the paper's threshold: tasks with fewer training examples
// split their validation set instead of their training set.
const SmallTrain = 10000

// DefaultSplitSeed is the seed of the paper's split shuffle unless one is
// given (the LST/Compacter code's data_seed).
const DefaultSplitSeed = 42

// Splits are the train, validation and test sets of the READ protocol.
type Splits struct {
	Task                    *Task
	Train, Validation, Test []Example
	Seed                    uint64
	// Rule says in words which rule produced the splits.
	Rule string
}

// PaperSplits applies the READ paper's protocol (Section 3) to d:
//
//   - fewer than 10k training examples (CoLA, MRPC, STS-B, RTE): the
//     original validation set is shuffled and split into halves, the first
//     ⌊n/2⌋ becoming validation and the rest test; training is unchanged;
//   - MNLI: validation = validation_mismatched, test = validation_matched;
//   - otherwise (SST-2, QQP, QNLI): the training set is shuffled, its first
//     1,000 examples become validation and the rest training; test = the
//     original validation set.
//
// The shuffle is a Fisher–Yates permutation from a PCG stream seeded by
// (seed, task name): deterministic for a seed, but not the membership of
// torch.randperm that the LST code produced.
func PaperSplits(d *Data, seed uint64) (Splits, error) {
	t := d.Task
	s := Splits{Task: t, Seed: seed}
	need := func(name string) ([]Example, error) {
		ex, ok := d.Splits[name]
		if !ok || len(ex) == 0 {
			return nil, fmt.Errorf("glue: %s: split %q is missing or empty", t.Name, name)
		}
		return ex, nil
	}
	train, err := need("train")
	if err != nil {
		return s, err
	}
	switch {
	case t.Name == "mnli":
		if s.Validation, err = need("validation_mismatched"); err != nil {
			return s, err
		}
		if s.Test, err = need("validation_matched"); err != nil {
			return s, err
		}
		s.Train = train
		s.Rule = "MNLI: validation = mismatched, test = matched"
	case len(train) < SmallTrain:
		val, err := need("validation")
		if err != nil {
			return s, err
		}
		perm := permute(val, seed, t.Name)
		half := len(perm) / 2
		s.Train, s.Validation, s.Test = train, perm[:half], perm[half:]
		s.Rule = "< 10k training examples: original validation split in halves (validation, test)"
	default:
		val, err := need("validation")
		if err != nil {
			return s, err
		}
		if len(train) <= 1000 {
			return s, fmt.Errorf("glue: %s: %d training examples, the protocol takes 1,000 for validation", t.Name, len(train))
		}
		perm := permute(train, seed, t.Name)
		s.Validation, s.Train, s.Test = perm[:1000], perm[1000:], val
		s.Rule = "≥ 10k training examples: 1,000 training examples as validation, original validation as test"
	}
	return s, nil
}

// permute returns a shuffled copy of ex.
func permute(ex []Example, seed uint64, task string) []Example {
	h := fnv.New64a()
	h.Write([]byte(task))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	out := append([]Example(nil), ex...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// Table6 holds the READ paper's Table 6 split sizes in thousands (train,
// test, validation). Its SST-2, QQP and QNLI training sizes are the
// original training set minus the original validation size, not minus the
// 1,000 the text describes; PaperSplits follows the text.
var Table6 = map[string][3]float64{
	"cola": {8.5, 0.52, 0.52}, "sst2": {66.5, 0.9, 1.0}, "mrpc": {3.7, 0.2, 0.2}, "qqp": {323.4, 40.4, 1.0},
	"stsb": {5.8, 0.8, 0.8}, "mnli": {392.7, 9.8, 9.8}, "qnli": {99.3, 5.4, 1.0},
}
