package t5

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/readsweep/readsweep/hub"
)

// HubRepo maps the short names of the original checkpoints (t5-small,
// t5-base, ...) to their hub repositories; other names pass through.
func HubRepo(name string) string {
	if !strings.Contains(name, "/") && (strings.HasPrefix(name, "t5-") || strings.HasPrefix(name, "t5-v1_1")) {
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
// spiece.model, and model.safetensors or its index and shards) from the
// hub into dir, resuming partial files and verifying every file, all at
// the commit revision names when Fetch starts, which it returns and
// records in dir's hub.RevisionFile.
func Fetch(ctx context.Context, c *hub.Client, name, revision, dir string) (string, error) {
	repo := HubRepo(name)
	commit, err := c.Resolve(ctx, hub.Models, repo, revision)
	if err != nil {
		return "", fmt.Errorf("t5: fetch %s: %w", repo, err)
	}
	if err := fetchAt(ctx, c, repo, commit, dir); err != nil {
		return "", err
	}
	return commit, hub.WriteSnapshot(dir, hub.Snapshot{Endpoint: c.Endpoint, Kind: hub.Models, Repo: repo, Revision: revision, Commit: commit})
}

func fetchAt(ctx context.Context, c *hub.Client, repo, revision, dir string) error {
	files, err := c.List(ctx, hub.Models, repo, revision, "")
	if err != nil {
		return fmt.Errorf("t5: fetch %s: %w", repo, err)
	}
	byPath := map[string]hub.File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	want := []string{"config.json", "spiece.model"}
	for _, p := range want {
		if _, ok := byPath[p]; !ok {
			return fmt.Errorf("t5: fetch %s: the repository has no %s", repo, p)
		}
	}
	get := func(p string) error {
		return c.Download(ctx, hub.Models, repo, revision, byPath[p], filepath.Join(dir, filepath.FromSlash(p)))
	}
	switch {
	case has(byPath, "model.safetensors"):
		want = append(want, "model.safetensors")
	case has(byPath, "model.safetensors.index.json"):
		if err := get("model.safetensors.index.json"); err != nil {
			return fmt.Errorf("t5: fetch %s: %w", repo, err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
		if err != nil {
			return fmt.Errorf("t5: %w", err)
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(raw, &idx); err != nil {
			return fmt.Errorf("t5: fetch %s: model.safetensors.index.json: %w", repo, err)
		}
		seen := map[string]bool{}
		for _, shard := range idx.WeightMap {
			if !seen[shard] && path.Clean(shard) == shard && !strings.HasPrefix(shard, "..") {
				seen[shard] = true
				want = append(want, shard)
			}
		}
	default:
		return fmt.Errorf("t5: fetch %s: the repository has no safetensors weights (only pytorch_model.bin?); "+
			"HINT: convert them with transformers' save_pretrained(..., safe_serialization=True)", repo)
	}
	for _, p := range want {
		if _, ok := byPath[p]; !ok {
			return fmt.Errorf("t5: fetch %s: the index names %s, which the repository lacks", repo, p)
		}
		if err := get(p); err != nil {
			return fmt.Errorf("t5: fetch %s: %w", repo, err)
		}
	}
	return nil
}

func has(m map[string]hub.File, p string) bool {
	_, ok := m[p]
	return ok
}
