package t5

import (
	"testing"

	"github.com/readsweep/readsweep/nn"
)

func benchmarkTrainStep(b *testing.B, size string) {
	for b.Loop() {
		m, err := NewBenchModel(size)
		if err != nil {
			b.Fatal(err)
		}
		trainable := m.Params.EnableGrad(func(string) bool { return true })
		r, err := BenchTrainStep(nn.DefaultBackend(), m, nil, trainable, size, 8, 64, 4, 1)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.SecondsPerStep, "s/step")
		b.ReportMetric(r.GemmGFLOPS, "GFLOP/s-gemm")
		b.ReportMetric(r.PeakRSSMB, "MB-peak-RSS")
	}
}

func BenchmarkTrainStepT5Tiny(b *testing.B)  { benchmarkTrainStep(b, "t5-tiny") }
func BenchmarkTrainStepT5Small(b *testing.B) { benchmarkTrainStep(b, "t5-small") }
