package sweep

import (
	"strings"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// TestPrecisionDiff: a study whose finished trials ran another product
// precision than the sweep file's is a conflict, as a changed search space
// is (a TPE model and a budget over both would mix them); trials that
// recorded none (older, or another trainer's) do not count.
func TestPrecisionDiff(t *testing.T) {
	trial := func(p any) storage.FrozenTrial {
		attrs := map[string]any{}
		if p != nil {
			attrs["precision"] = p
		}
		return storage.FrozenTrial{State: storage.Complete, UserAttrs: attrs}
	}
	trials := []storage.FrozenTrial{trial("fp32"), trial("fp32"), trial(nil)}
	if d := precisionDiff(trials, map[string]any{}); len(d) != 0 {
		t.Errorf("fp32 trials under the default: %v", d)
	}
	if d := precisionDiff(trials, map[string]any{"precision": "fp32"}); len(d) != 0 {
		t.Errorf("fp32 trials under precision: fp32: %v", d)
	}
	d := precisionDiff(trials, map[string]any{"precision": "bf16"})
	if len(d) != 1 || !strings.Contains(d[0], "2 trials ran fp32 products, the sweep file says bf16") {
		t.Errorf("fp32 trials under bf16: %v", d)
	}
	if err := spaceConflicts([]string{"read/x/sst2: " + d[0]}); err == nil || !strings.Contains(err.Error(), "No trial was started") {
		t.Errorf("the conflict: %v", err)
	}
}
