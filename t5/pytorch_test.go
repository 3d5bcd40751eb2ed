package t5

import (
	"archive/zip"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
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

// rawZip writes a zip of records whose headers say what sizes says
// (CreateRaw writes headers as given): a file's own account of itself,
// which a reader must not believe.
func rawZip(t *testing.T, records []string, data [][]byte, sizes []uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pytorch_model.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for i, name := range records {
		size := uint64(len(data[i]))
		if sizes != nil && sizes[i] > 0 {
			size = sizes[i]
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(data[i]),
			CompressedSize64: size, UncompressedSize64: size})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data[i])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// oneTensorPickle is data.pkl of {"shared.weight": a FloatStorage "0" of
// numel values as a vector}, opcode by opcode, as torch.save writes it.
func oneTensorPickle(numel uint32) []byte {
	str := func(s string) []byte {
		return append(append([]byte{'X'}, binary.LittleEndian.AppendUint32(nil, uint32(len(s)))...), s...)
	}
	n := append([]byte{'J'}, binary.LittleEndian.AppendUint32(nil, numel)...)
	var p []byte
	p = append(p, "\x80\x02ccollections\nOrderedDict\n)R"...)
	p = append(p, str("shared.weight")...)
	p = append(p, "ctorch._utils\n_rebuild_tensor_v2\n(("...)
	p = append(p, str("storage")...)
	p = append(p, "ctorch\nFloatStorage\n"...)
	p = append(append(append(p, str("0")...), str("cpu")...), n...)
	p = append(p, "tQK\x00"...)
	p = append(append(p, n...), '\x85', 'K', 1, '\x85', '\x89')
	p = append(p, "ccollections\nOrderedDict\n)RtRs."...)
	return p
}

// TestPyTorchClaimsChecked: what a pytorch_model.bin says about its sizes
// is checked against what it holds before anything is allocated: a
// string in the pickle longer than the pickle, a storage record longer
// than the file, and more values than the model's config holds, each
// refused with what was claimed; the same file with honest sizes reads.
func TestPyTorchClaimsChecked(t *testing.T) {
	big := uint64(40 << 30)
	huge := append([]byte("\x80\x02\x8d"), binary.LittleEndian.AppendUint64(nil, big)...)
	plenty := int64(1 << 40)
	for _, tc := range []struct {
		name   string
		path   string
		budget int64
		want   string
	}{
		{"a 40 GiB string in a tiny pickle", rawZip(t, []string{"archive/data.pkl"}, [][]byte{append(huge, "x."...)}, nil), plenty,
			"opcode 0x8d claims 42949672960 bytes, 2 follow"},
		{"a storage record claiming 8 GiB", rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(1<<31 - 1), make([]byte, 16)},
			[]uint64{0, 4 * (1<<31 - 1)}), plenty, "data/0 claims 8589934588 bytes, more than the file's"},
		{"more values than the model", rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(4), make([]byte, 16)}, nil), 3,
			"storage data/0 takes the values read past 3, more than config.json's model holds"},
	} {
		budget := tc.budget
		if _, err := readPyTorch(tc.path, &budget); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	budget := plenty
	ts, err := readPyTorch(rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(4), make([]byte, 16)}, nil), &budget)
	if err != nil || len(ts) != 1 || len(ts["shared.weight"].values) != 4 {
		t.Errorf("the honest file: %v, %v", ts, err)
	}
}
