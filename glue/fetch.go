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
// finds them, all at the commit revision names when Fetch starts, which
// it returns and records in each task folder's hub.RevisionFile. Finished
// files are kept; interrupted ones resume. Both of the hub's layouts are
// read: main's <task>/<split>-00000-of-00001.parquet, and the parquet
// converter's <task>/<split>/0000.parquet (revision refs/convert/parquet),
// stored as <task>/<split>-0000.parquet.
func Fetch(ctx context.Context, c *hub.Client, dir, revision string, tasks []*Task) (string, error) {
	commit, err := c.Resolve(ctx, hub.Datasets, HubRepo, revision)
	if err != nil {
		return "", fmt.Errorf("glue: fetch: %w", err)
	}
	for _, t := range tasks {
		files, err := c.List(ctx, hub.Datasets, HubRepo, commit, t.Name)
		if err != nil {
			return "", fmt.Errorf("glue: fetch %s: %w", t.Name, err)
		}
		type download struct {
			f     hub.File
			local string // under dir
		}
		var want []download
		for _, f := range files {
			if path.Ext(f.Path) != ".parquet" {
				continue
			}
			if strings.ContainsAny(f.Path, `\:`) {
				continue // not a name this layout has; on Windows, a way out of the folder
			}
			local := ""
			switch parent := path.Dir(f.Path); {
			case parent == t.Name:
				local = f.Path
			case path.Dir(parent) == t.Name:
				// The converter's layout: the split is a folder.
				local = t.Name + "/" + path.Base(parent) + "-" + path.Base(f.Path)
			default:
				continue
			}
			if split := hubSplit(path.Base(local)); slices.Contains(t.SplitNames(), split) {
				want = append(want, download{f, local})
			}
		}
		if len(want) == 0 {
			return "", fmt.Errorf("glue: fetch %s: the hub lists no train/validation parquet files under %s/%s at %s", t.Name, HubRepo, t.Name, revision)
		}
		for _, d := range want {
			if err := c.Download(ctx, hub.Datasets, HubRepo, commit, d.f, filepath.Join(dir, filepath.FromSlash(d.local))); err != nil {
				return "", fmt.Errorf("glue: fetch %s: %w", t.Name, err)
			}
		}
		var names []string // relative to the task's folder
		for _, d := range want {
			names = append(names, path.Base(d.local))
		}
		if err := hub.ReplaceSnapshot(filepath.Join(dir, t.Name), hub.Snapshot{Endpoint: c.Endpoint, Kind: hub.Datasets, Repo: HubRepo, Revision: revision, Commit: commit, Files: names}); err != nil {
			return "", err
		}
	}
	return commit, nil
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
