package glue

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/readsweep/readsweep/hub"
)

// HubRepo is the hub dataset holding GLUE as parquet files, one folder per
// task.
const HubRepo = "nyu-mll/glue"

// Fetch downloads the labelled splits (train and validation; test labels
// are hidden anyway) of each task from the hub into dir/<task>/, where Load
// finds them. Finished files are kept; interrupted ones resume.
func Fetch(ctx context.Context, c *hub.Client, dir, revision string, tasks []*Task) error {
	for _, t := range tasks {
		files, err := c.List(ctx, hub.Datasets, HubRepo, revision, t.Name)
		if err != nil {
			return fmt.Errorf("glue: fetch %s: %w", t.Name, err)
		}
		var want []hub.File
		for _, f := range files {
			if path.Ext(f.Path) != ".parquet" || path.Dir(f.Path) != t.Name {
				continue
			}
			if split := hubSplit(path.Base(f.Path)); slices.Contains(t.SplitNames(), split) {
				want = append(want, f)
			}
		}
		if len(want) == 0 {
			return fmt.Errorf("glue: fetch %s: the hub lists no train/validation parquet files under %s/%s", t.Name, HubRepo, t.Name)
		}
		for _, f := range want {
			if err := c.Download(ctx, hub.Datasets, HubRepo, revision, f, filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
				return fmt.Errorf("glue: fetch %s: %w", t.Name, err)
			}
		}
	}
	return nil
}

// hubSplit returns the split a hub file belongs to: train-00000-of-00001
// and glue-train are both "train".
func hubSplit(name string) string {
	base := strings.TrimPrefix(strings.TrimSuffix(name, path.Ext(name)), "glue-")
	if i := strings.IndexByte(base, '-'); i >= 0 {
		base = base[:i]
	}
	return base
}
