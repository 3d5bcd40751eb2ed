package t5

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/readsweep/readsweep/hub"
)

// HubRepo maps the short names of the original checkpoints to their hub
// repositories: t5-small ... t5-11b live under google-t5, the v1.1 and Flan
// ones (t5-v1_1-base, flan-t5-base) under google; other names pass
// through.
func HubRepo(name string) string {
	switch {
	case strings.Contains(name, "/"):
		return name
	case strings.HasPrefix(name, "t5-v1_1") || strings.HasPrefix(name, "flan-t5-"):
		return "google/" + name
	case strings.HasPrefix(name, "t5-"):
		return "google-t5/" + name
	}
	return name
}

// CacheDir is where Fetch puts a model by default: the user cache
// directory's readsweep/models/ORG/NAME.
func CacheDir(name string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("t5: %w", err)
	}
	return filepath.Join(base, "readsweep", "models", filepath.FromSlash(HubRepo(name))), nil
}

// Fetch downloads what Load and LoadTokenizer read (config.json,
// spiece.model, and the first of WeightFiles the repository has, with its
// shards) from the
// hub into dir, resuming partial files and verifying every file, all at
// the commit revision names when Fetch starts, which it returns and
// records in dir's hub.RevisionFile.
func Fetch(ctx context.Context, c *hub.Client, name, revision, dir string) (string, error) {
	repo := HubRepo(name)
	commit, err := c.Resolve(ctx, hub.Models, repo, revision)
	if err != nil {
		return "", fmt.Errorf("t5: fetch %s: %w", repo, err)
	}
	files, err := fetchAt(ctx, c, repo, commit, dir)
	if err != nil {
		return "", err
	}
	return commit, hub.ReplaceSnapshot(dir, hub.Snapshot{Endpoint: c.Endpoint, Kind: hub.Models, Repo: repo, Revision: revision, Commit: commit, Files: files})
}

// fetchAt downloads the model at a commit and returns the files it holds.
func fetchAt(ctx context.Context, c *hub.Client, repo, revision, dir string) ([]string, error) {
	files, err := c.List(ctx, hub.Models, repo, revision, "")
	if err != nil {
		return nil, fmt.Errorf("t5: fetch %s: %w", repo, err)
	}
	byPath := map[string]hub.File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	want := []string{"config.json", "spiece.model"}
	for _, p := range want {
		if _, ok := byPath[p]; !ok {
			return nil, fmt.Errorf("t5: fetch %s: the repository has no %s", repo, p)
		}
	}
	var index []string // the shard index, when the weights are sharded
	get := func(p string) error {
		return c.Download(ctx, hub.Models, repo, revision, byPath[p], filepath.Join(dir, filepath.FromSlash(p)))
	}
	weights := ""
	for _, name := range WeightFiles {
		if has(byPath, name) {
			weights = name
			break
		}
	}
	switch {
	case weights == "":
		return nil, fmt.Errorf("t5: fetch %s: the repository has none of %s", repo, strings.Join(WeightFiles, ", "))
	case !strings.HasSuffix(weights, ".index.json"):
		want = append(want, weights)
	default:
		index = []string{weights}
		if err := get(weights); err != nil {
			return nil, fmt.Errorf("t5: fetch %s: %w", repo, err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, weights))
		if err != nil {
			return nil, fmt.Errorf("t5: %w", err)
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, fmt.Errorf("t5: fetch %s: %s: %w", repo, weights, err)
		}
		seen := map[string]bool{}
		for _, shard := range idx.WeightMap {
			if !ShardName(shard) {
				return nil, fmt.Errorf("t5: fetch %s: %s names shard %q, not a file name in the folder", repo, weights, shard)
			}
			if !seen[shard] {
				seen[shard] = true
				want = append(want, shard)
			}
		}
		slices.Sort(want[2:]) // the map's order is random
	}
	for _, p := range want {
		if _, ok := byPath[p]; !ok {
			return nil, fmt.Errorf("t5: fetch %s: the index names %s, which the repository lacks", repo, p)
		}
		if err := get(p); err != nil {
			return nil, fmt.Errorf("t5: fetch %s: %w", repo, err)
		}
	}
	return append(want, index...), nil
}

func has(m map[string]hub.File, p string) bool {
	_, ok := m[p]
	return ok
}
