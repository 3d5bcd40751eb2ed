package hub

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/hub/hubtest"
)

func newServer(t *testing.T, files map[string][]byte) (*hubtest.Server, *Client) {
	h := hubtest.NewServer(t, files)
	return h, FromEnv()
}

func TestListAndDownload(t *testing.T) {
	content := []byte(strings.Repeat("parquet bytes ", 1000))
	h, c := newServer(t, map[string][]byte{"datasets/nyu-mll/glue/cola/train-00000-of-00001.parquet": content})
	ctx := context.Background()
	files, err := c.List(ctx, Datasets, "nyu-mll/glue", "main", "cola")
	if err != nil || len(files) != 1 || files[0].Size != int64(len(content)) || files[0].SHA256 == "" {
		t.Fatalf("List = %+v, %v", files, err)
	}
	dst := filepath.Join(t.TempDir(), "cola", "train.parquet")
	// An interrupted earlier download left the first 5000 bytes.
	os.MkdirAll(filepath.Dir(dst), 0o755)
	os.WriteFile(dst+".part", content[:5000], 0o644)
	var last int64
	c.Progress = func(_ string, done, total int64) { last = done }
	if err := c.Download(ctx, Datasets, "nyu-mll/glue", "main", files[0], dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if string(got) != string(content) || last != int64(len(content)) {
		t.Errorf("downloaded %d bytes (progress %d), want %d", len(got), last, len(content))
	}
	if len(h.Ranges()) != 1 || h.Ranges()[0] != "bytes=5000-" {
		t.Errorf("range requests %v, want one resuming at 5000", h.Ranges())
	}
	for _, a := range h.Auth() {
		if a != "Bearer "+hubtest.Token {
			t.Errorf("Authorization %q, want the HF_TOKEN", a)
		}
	}
	// A second call finds the verified file and asks nothing.
	before := len(h.Auth())
	if err := c.Download(ctx, Datasets, "nyu-mll/glue", "main", files[0], dst); err != nil || len(h.Auth()) != before {
		t.Errorf("re-download: %v, %d requests", err, len(h.Auth())-before)
	}
}

func TestDownloadRejectsCorruptFile(t *testing.T) {
	_, c := newServer(t, map[string][]byte{"models/google-t5/t5-small/config.json": []byte(`{"d_model": 512}`)})
	dst := filepath.Join(t.TempDir(), "config.json")
	f := File{Path: "config.json", Size: 16, SHA256: strings.Repeat("0", 64)}
	err := c.Download(context.Background(), Models, "google-t5/t5-small", "main", f, dst)
	if !errors.Is(err, ErrVerify) {
		t.Errorf("Download = %v, want ErrVerify", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Error("a file that failed verification was kept")
	}
	var se *StatusError
	err = c.Download(context.Background(), Models, "google-t5/t5-small", "main", File{Path: "missing.bin"}, dst)
	if !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("missing file: %v", err)
	}
}
