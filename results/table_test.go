package results

import (
	"strings"
	"testing"
)

// TestTable1SaysThePrecision: Table 1 notes the product precision, once
// when every run agrees, per method when they differ; runs from before the
// setting count as fp32.
func TestTable1SaysThePrecision(t *testing.T) {
	note := func(rows []Row) string {
		for _, n := range Table1(rows, nil, false).Notes {
			if strings.Contains(n, "precision") {
				return n
			}
		}
		return ""
	}
	if got := note([]Row{{Method: "read"}, {Method: "lora", Precisions: []string{"fp32"}}}); got != "Matrix products at fp32 in every run (training setting precision)." {
		t.Errorf("uniform: %q", got)
	}
	got := note([]Row{{Method: "read", Precisions: []string{"bf16"}}, {Method: "lora", Precisions: []string{"bf16", "fp32"}}})
	if !strings.Contains(got, "READ bf16") || !strings.Contains(got, "LoRA bf16 and fp32") {
		t.Errorf("mixed: %q", got)
	}
}
