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
		{"testdata/pytorch/short-storage", `"data/0" has 2048 bytes, 1024 FloatStorage values need 4096`},
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
		{"an 8-dimensional view of one value, 10⁶ times over", rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{manyDimensions(), make([]byte, 4)}, nil), plenty,
			"a tensor of 9 dimensions"},
		{"a 40 GiB string in a tiny pickle", rawZip(t, []string{"archive/data.pkl"}, [][]byte{append(huge, "x."...)}, nil), plenty,
			"a string of 42949672960 bytes; a state dict's are names"},
		{"a 40 GiB string behind a short one", rawZip(t, []string{"archive/data.pkl"}, [][]byte{append([]byte("\x80\x02\x8c\x01a\x8d"),
			binary.LittleEndian.AppendUint64(nil, 40<<30+0x2e)...)}, nil), plenty, "a string of 42949673006 bytes"},
		{"a frame longer than the pickle", rawZip(t, []string{"archive/data.pkl"}, [][]byte{append([]byte("\x80\x04\x95"),
			binary.LittleEndian.AppendUint64(nil, 1<<40)...)}, nil), plenty, "a frame of 1099511627776 bytes, and 0 bytes follow"},
		{"a name a thousand times in an error", rawZip(t, []string{"archive/data.pkl"}, [][]byte{sharedReferences()}, nil), plenty,
			"OrderedDict called with arguments"},
		{"a storage record claiming 8 GiB", rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(1<<31 - 1), make([]byte, 16)},
			[]uint64{0, 4 * (1<<31 - 1)}), plenty, "\"data/0\" claims 8589934588 bytes, more than the file's"},
		{"a second folder with its own data.pkl", rawZip(t, []string{"archive/data.pkl", "archive/data/0", "zzz/data.pkl"},
			[][]byte{oneTensorPickle(4), make([]byte, 16), oneTensorPickle(4)}, nil), plenty, `records in two folders ("archive" and "zzz")`},
		{"a big-endian file", rawZip(t, []string{"archive/data.pkl", "archive/data/0", "archive/byteorder"},
			[][]byte{oneTensorPickle(4), make([]byte, 16), []byte("big")}, nil), plenty, "saved on a big-endian machine"},
		{"a damaged storage", corruptStorage(t), plenty, "checksum error"},
		{"a long control-character name, twice", rawZip(t, []string{"archive/data.pkl", "archive/\x1b[2J" + strings.Repeat("B", 5000), "archive/\x1b[2J" + strings.Repeat("B", 5000)},
			[][]byte{oneTensorPickle(4), nil, nil}, nil), plenty, `two records named "archive/\x1b[2JBBB`},
		{"more values than the model", rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(4), make([]byte, 16)}, nil), 3,
			"storage \"data/0\" takes the values read past what config.json's model holds"},
	} {
		budget := &pickleBudget{values: tc.budget, entries: 1 << 20}
		if _, err := readPyTorch(tc.path, budget); err == nil || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 1000 {
			t.Errorf("%s: %.2000v", tc.name, err)
		}
	}
	few := &pickleBudget{values: plenty, entries: 1} // a file, and then no room for its entry
	if _, err := readPyTorch(rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(0), nil}, nil), few); err == nil ||
		!strings.Contains(err.Error(), `entry "shared.weight" takes the tensors read past what config.json's model holds`) {
		t.Errorf("more entries than the model (empty tensors, which hold no values): %v", err)
	}
	budget := &pickleBudget{values: plenty, entries: 1 << 20}
	p4, err := readPyTorch("testdata/pytorch/protocol4/pytorch_model.bin", budget)
	twin, _ := OpenSafetensors("testdata/tiny-t5-v1/model.safetensors")
	defer twin.Close()
	if err != nil || len(p4) != 3 {
		t.Fatalf("protocol 4: %d tensors, %v", len(p4), err)
	}
	for name, tensor := range p4 {
		want, _, err := twin.ReadAll(name)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, "protocol 4 "+name, tensor.values, want, 0, 0)
	}
	ts, err := readPyTorch(rawZip(t, []string{"archive/data.pkl", "archive/data/0"}, [][]byte{oneTensorPickle(4), make([]byte, 16)}, nil), budget)
	if err != nil || len(ts) != 1 || len(ts["shared.weight"].values) != 4 {
		t.Errorf("the honest file: %v, %v", ts, err)
	}
}

// sharedReferences is a pickle that calls OrderedDict with a tuple of a
// thousand references to one 60 kB name: an error that printed its
// arguments would print 60 MB (and nested, without bound).
func sharedReferences() []byte {
	p := []byte("\x80\x02ccollections\nOrderedDict\n(X")
	p = binary.LittleEndian.AppendUint32(p, 60000)
	p = append(p, strings.Repeat("a", 60000)...)
	p = append(p, 'q', 0)
	for range 999 {
		p = append(p, 'h', 0)
	}
	return append(p, "tR."...)
}

// manyDimensions is a pickle of one tensor of 9 dimensions of size 1 and
// stride 0 over a one-value storage.
func manyDimensions() []byte {
	str := func(s string) []byte {
		return append(append([]byte{'X'}, binary.LittleEndian.AppendUint32(nil, uint32(len(s)))...), s...)
	}
	p := []byte("\x80\x02ccollections\nOrderedDict\n)R")
	p = append(p, str("w")...)
	p = append(p, "ctorch._utils\n_rebuild_tensor_v2\n(("...)
	p = append(p, str("storage")...)
	p = append(p, "ctorch\nFloatStorage\n"...)
	p = append(append(p, str("0")...), str("cpu")...)
	p = append(p, "K\x01tQK\x00("...)
	for range 9 {
		p = append(p, 'K', 1)
	}
	p = append(p, "t("...)
	for range 9 {
		p = append(p, 'K', 0)
	}
	p = append(p, "t\x89)tRs."...)
	return p
}

// corruptStorage is a file whose storage's bytes do not match its
// recorded checksum.
func corruptStorage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pytorch_model.bin")
	f, _ := os.Create(path)
	zw := zip.NewWriter(f)
	for name, data := range map[string][]byte{"archive/data.pkl": oneTensorPickle(4), "archive/data/0": make([]byte, 16)} {
		crc := crc32.ChecksumIEEE(data)
		if name == "archive/data/0" {
			crc++
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, CRC32: crc, CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data))})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	zw.Close()
	f.Close()
	return path
}
