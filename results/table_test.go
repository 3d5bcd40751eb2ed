package results

import (
	"strings"
	"testing"
)

// TestTablesSayThePrecision: Tables 1 and 3 note the product precision,
// once when every run agrees, per method when they differ; runs from
// before the setting count as fp32.
func TestTablesSayThePrecision(t *testing.T) {
	for _, table := range []func([]Row) Table{
		func(rows []Row) Table { return Table1(rows, nil, false) },
		func(rows []Row) Table { return Table3(rows, false) },
	} {
		checkPrecisionNote(t, func(rows []Row) string {
			for _, n := range table(rows).Notes {
				if strings.Contains(n, "precision") {
					return n
				}
			}
			return ""
		})
	}
}

func checkPrecisionNote(t *testing.T, note func([]Row) string) {
	t.Helper()
	if got := note([]Row{{Method: "read"}, {Method: "lora", Precisions: []string{"fp32"}}}); got != "Matrix products at fp32 in every run (training setting precision)." {
		t.Errorf("uniform: %q", got)
	}
	got := note([]Row{{Method: "read", Precisions: []string{"bf16"}}, {Method: "lora", Precisions: []string{"bf16", "fp32"}}})
	if !strings.Contains(got, "READ bf16") || !strings.Contains(got, "LoRA bf16 and fp32") {
		t.Errorf("mixed: %q", got)
	}
}
