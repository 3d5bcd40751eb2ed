package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// TestBestSaysThePrecision: sweep best shows the precision each best
// trial recorded, and "-" for a trial that recorded none (a trainer that
// does not say), rather than guessing fp32.
func TestBestSaysThePrecision(t *testing.T) {
	v1, v2 := 91.5, 60.25
	sel := sweep.Selection{Method: "read", Datasets: []string{"sst2", "rte"}, Archs: []sweep.ArchScore{{
		Arch: "default", Mean: 75.875, Complete: true,
		Study: map[string]string{"sst2": "read/default/sst2", "rte": "read/default/rte"},
		Best: map[string]storage.FrozenTrial{
			"sst2": {Number: 3, Value: &v1, UserAttrs: map[string]any{"precision": "bf16", "test": 90.0}},
			"rte":  {Number: 1, Value: &v2},
		},
	}}}
	var out bytes.Buffer
	printSelection(&out, sel)
	lines := strings.Split(out.String(), "\n")
	var sst2, rte string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "sst2 "):
			sst2 = l
		case strings.HasPrefix(l, "rte "):
			rte = l
		}
	}
	if !strings.Contains(sst2, " bf16 ") || !strings.Contains(sst2, "read/default/sst2#3") {
		t.Errorf("sst2's row %q lacks its recorded bf16:\n%s", sst2, out.String())
	}
	if fields := strings.Fields(rte); len(fields) != 6 || fields[4] != "-" {
		t.Errorf("rte's row %q: want - for an unrecorded precision:\n%s", rte, out.String())
	}
}
