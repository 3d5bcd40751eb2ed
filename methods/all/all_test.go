package all

import (
	"slices"
	"strings"
	"testing"
)

// TestRegistry: the paper's row order, every trainable method with a
// constructor and a display name, and the synthetic double accepted by
// name but never built.
func TestRegistry(t *testing.T) {
	r := Registry()
	want := []string{"full", "adapter", "lora", "bitfit", "prompt", "lst", "read", "ia3", Synthetic}
	if got := r.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	for _, n := range want {
		e := r[n]
		if e.Display == "" || (e.New == nil) != (n == Synthetic) {
			t.Errorf("%s: %+v", n, e)
		}
		if r.Rank(n) != slices.Index(want, n) {
			t.Errorf("Rank(%s) = %d", n, r.Rank(n))
		}
	}
	if r.Display("lora") != "LoRA" || r.Display("mystery") != "mystery" || r.Rank("mystery") != len(want) {
		t.Errorf("Display/Rank of a known and an unknown method: %q %q %d", r.Display("lora"), r.Display("mystery"), r.Rank("mystery"))
	}
	if _, err := r.New(Synthetic, nil, nil, 0); err == nil || !strings.Contains(err.Error(), "unknown method") || strings.Contains(err.Error(), "synthetic)") {
		t.Errorf("New(synthetic): %v", err)
	}
}
