package t5

import (
	"os"
	"strings"
	"testing"
)

// TestPyTorchCheckpoints: pytorch_model.bin files torch.save wrote
// (testdata/pytorch/make.py: one file, and two shards with an index, one
// tensor in column-major strides) load to exactly the tensors of their
// safetensors twin; a pickle that would run a command, a file that is not
// a torch.save archive and a storage shorter than its tensor are refused
// by name, and nothing runs.
func TestPyTorchCheckpoints(t *testing.T) {
	twin, err := Load("testdata/tiny-t5-v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"testdata/pytorch/single", "testdata/pytorch/sharded"} {
		m, err := Load(dir)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for i, name := range twin.Params.Names {
			compare(t, dir+" "+name, m.Params.Tensors[i].Data, twin.Params.Tensors[i].Data, 0, 0)
		}
	}
	const ran = "/tmp/readsweep-pickle-ran"
	os.Remove(ran)
	for _, tc := range []struct{ dir, want string }{
		{"testdata/pytorch/malicious", "refused: the pickle calls posix.system, which a state dict of float tensors"},
		{"testdata/pytorch/short-storage", "data/0 has 2048 bytes, 1024 FloatStorage values need 4096"},
	} {
		if _, err := Load(tc.dir); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.dir) {
			t.Errorf("%s: %v", tc.dir, err)
		}
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("the malicious pickle's command ran")
	}
}
