package t5

import (
	"testing"

	"github.com/readsweep/readsweep/nn"
)

func benchmarkTrainStep(b *testing.B, size string) {
	for b.Loop() {
		r, err := BenchTrainStep(nn.DefaultBackend(), size, 8, 64, 4, 1)
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
