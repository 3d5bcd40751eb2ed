package tpe

import (
	"context"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// benchmarkSuggest times one TPE suggestion for the 32nd trial of obj.
func benchmarkSuggest(b *testing.B, obj Objective) {
	o := DefaultOptions()
	o.Seed, o.Seeded = 1, true
	s := New(o)
	var trials []storage.FrozenTrial
	for i := range 31 {
		p, _ := s.Sample(storage.Study{}, trials, i, obj.Space)
		v := obj.True(p)
		trials = append(trials, storage.FrozenTrial{Number: i, State: storage.Complete, Value: &v, Params: p, Distributions: obj.Space})
	}
	for b.Loop() {
		s.Sample(storage.Study{}, trials, 31, obj.Space)
	}
}

func BenchmarkSuggestLR(b *testing.B)        { benchmarkSuggest(b, Objectives()[0]) }
func BenchmarkSuggestBranin(b *testing.B)    { benchmarkSuggest(b, Objectives()[1]) }
func BenchmarkSuggestHartmann6(b *testing.B) { benchmarkSuggest(b, Objectives()[2]) }

// BenchmarkRegret runs the full sampler-quality benchmark of `sweep bench
// tpe` and reports mean regret after 32 trials over 30 seeds per objective.
func BenchmarkRegret(b *testing.B) {
	for _, obj := range Objectives() {
		b.Run(obj.Name, func(b *testing.B) {
			for b.Loop() {
				var runs []Run
				for seed := range uint64(30) {
					o := DefaultOptions()
					o.Seed, o.Seeded = seed, true
					r, err := RunObjective(context.Background(), obj, New(o), seed, 32)
					if err != nil {
						b.Fatal(err)
					}
					runs = append(runs, r)
				}
				s := Summarize(obj.Name, "tpe", runs, []int{32})
				b.ReportMetric(s.Mean[0], "regret@32")
				b.ReportMetric(s.MsPerSuggest, "ms/suggest")
			}
		})
	}
}
