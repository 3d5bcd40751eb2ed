package t5

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// PyTorch checkpoints. Many hub repositories (the T5 v1.1 ones among them)
// hold only pytorch_model.bin: a zip archive (torch.save since PyTorch
// 1.6) of data.pkl, a pickle of the state dict, and data/KEY, the raw
// bytes of each storage. A pickle is a program: Python's unpickler calls
// whatever it names. Here the unpickler (gopickle's, which runs nothing
// by itself) resolves only the names torch.save writes for a dictionary
// of float tensors; any other name stops the load with an error naming
// it, and a storage must have exactly the bytes its element count needs
// before anything is allocated for it.

// pickledTensor is one tensor of a state dict, as float32.
type pickledTensor struct {
	shape  []int
	values []float32
}

// storageType is the dtype a torch.*Storage global names.
type storageType struct {
	name string // torch's
	size int    // bytes per element
}

// storage is one data/KEY record read as float32.
type storage struct {
	key    string
	values []float32
}

// rebuildTensor is torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, backward_hooks[, metadata]).
type rebuildTensor struct{}

func (rebuildTensor) Call(args ...any) (any, error) {
	if len(args) < 5 {
		return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(args))
	}
	st, ok1 := args[0].(*storage)
	offset, ok2 := args[1].(int)
	size, ok3 := args[2].(*types.Tuple)
	stride, ok4 := args[3].(*types.Tuple)
	if !ok1 || !ok2 || !ok3 || !ok4 || size.Len() != stride.Len() || offset < 0 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: unexpected arguments")
	}
	shape, strides := make([]int, size.Len()), make([]int, size.Len())
	n, last := 1, offset // elements, and the last one's index
	for i := range shape {
		d, ok := size.Get(i).(int)
		s, ok2 := stride.Get(i).(int)
		if !ok || !ok2 || d < 0 || s < 0 || d > len(st.values) || s > len(st.values) {
			return nil, fmt.Errorf("_rebuild_tensor_v2: size %v, stride %v", size, stride)
		}
		shape[i], strides[i] = d, s
		n *= d
		if n > len(st.values) && d > 0 {
			return nil, fmt.Errorf("storage %s holds %d values, a tensor of size %v more", st.key, len(st.values), shape)
		}
		if d > 0 {
			last += (d - 1) * s
		}
	}
	if n > 0 && last >= len(st.values) {
		return nil, fmt.Errorf("storage %s holds %d values; a tensor of size %v and stride %v at offset %d reads beyond it", st.key, len(st.values), shape, strides, offset)
	}
	out := make([]float32, n)
	idx := make([]int, len(shape))
	for k := range out {
		at := offset
		for i, j := range idx {
			at += j * strides[i]
		}
		out[k] = st.values[at]
		for i := len(idx) - 1; i >= 0; i-- { // row-major odometer
			if idx[i]++; idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return &pickledTensor{shape: shape, values: out}, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data,
// requires_grad, backward_hooks): a saved nn.Parameter is its tensor.
type rebuildParameter struct{}

func (rebuildParameter) Call(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, fmt.Errorf("_rebuild_parameter without arguments")
	}
	t, ok := args[0].(*pickledTensor)
	if !ok {
		return nil, fmt.Errorf("_rebuild_parameter of a %T", args[0])
	}
	return t, nil
}

// pickleClass is the unpickler's only way to names outside the pickle:
// the globals of a torch.save'd dictionary of float tensors.
func pickleClass(module, name string) (any, error) {
	switch module + "." + name {
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor{}, nil
	case "torch._utils._rebuild_parameter":
		return rebuildParameter{}, nil
	case "torch.FloatStorage":
		return storageType{"FloatStorage", 4}, nil
	case "torch.HalfStorage":
		return storageType{"HalfStorage", 2}, nil
	case "torch.BFloat16Storage":
		return storageType{"BFloat16Storage", 2}, nil
	}
	return nil, fmt.Errorf("refused: the pickle calls %s.%s, which a state dict of float tensors (torch.save(model.state_dict())) does not; nothing was run", module, name)
}

// readPyTorch reads the state dict of a torch.save zip archive.
func readPyTorch(file string) (tensors map[string]*pickledTensor, err error) {
	defer func() {
		if r := recover(); r != nil { // the unpickler's own checks on hostile bytes
			tensors, err = nil, fmt.Errorf("t5: %s: malformed pickle (%v)", file, r)
		}
	}()
	z, err := zip.OpenReader(file)
	if err != nil {
		return nil, fmt.Errorf("t5: %s is not a zip archive of torch.save (PyTorch ≥ 1.6); the legacy format is not read: re-save it with torch.save, or as safetensors (%v)", file, err)
	}
	defer z.Close()
	records := map[string]*zip.File{}
	var pkl *zip.File
	for _, f := range z.File {
		records[f.Name] = f
		if path.Base(f.Name) == "data.pkl" && strings.Count(f.Name, "/") == 1 {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("t5: %s: no data.pkl: not a torch.save archive", file)
	}
	prefix := path.Dir(pkl.Name)
	r, err := pkl.Open()
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", file, err)
	}
	defer r.Close()
	u := pickle.NewUnpickler(r)
	u.FindClass = pickleClass
	storages := map[string]*storage{}
	u.PersistentLoad = func(id any) (any, error) {
		t, ok := id.(*types.Tuple)
		if !ok || t.Len() < 5 || t.Get(0) != "storage" {
			return nil, fmt.Errorf("unexpected persistent id %v", id)
		}
		typ, ok1 := t.Get(1).(storageType)
		key, ok2 := t.Get(2).(string)
		numel, ok3 := t.Get(4).(int)
		if !ok1 || !ok2 || !ok3 || numel < 0 {
			return nil, fmt.Errorf("unexpected storage %v", id)
		}
		if st, ok := storages[key]; ok {
			return st, nil
		}
		rec, ok := records[prefix+"/data/"+key]
		if !ok {
			return nil, fmt.Errorf("no record data/%s", key)
		}
		if rec.UncompressedSize64 != uint64(numel)*uint64(typ.size) {
			return nil, fmt.Errorf("data/%s has %d bytes, %d %s values need %d", key, rec.UncompressedSize64, numel, typ.name, uint64(numel)*uint64(typ.size))
		}
		raw := make([]byte, rec.UncompressedSize64)
		rr, err := rec.Open()
		if err != nil {
			return nil, err
		}
		_, err = io.ReadFull(rr, raw)
		rr.Close()
		if err != nil {
			return nil, fmt.Errorf("data/%s: %w", key, err)
		}
		st := &storage{key: key, values: make([]float32, numel)}
		for i := range st.values {
			switch typ.name {
			case "FloatStorage":
				st.values[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			case "HalfStorage":
				st.values[i] = HalfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
			case "BFloat16Storage":
				st.values[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
			}
		}
		storages[key] = st
		return st, nil
	}
	obj, err := u.Load()
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", file, err)
	}
	tensors = map[string]*pickledTensor{}
	add := func(k, v any) error {
		name, ok := k.(string)
		t, ok2 := v.(*pickledTensor)
		if !ok || !ok2 {
			return fmt.Errorf("t5: %s: entry %v is a %T, not a tensor: not a state dict", file, k, v)
		}
		tensors[name] = t
		return nil
	}
	switch d := obj.(type) {
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			entry := e.Value.(*types.OrderedDictEntry)
			if err := add(entry.Key, entry.Value); err != nil {
				return nil, err
			}
		}
	case *types.Dict:
		for _, e := range *d {
			if err := add(e.Key, e.Value); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("t5: %s holds a %T, not a state dict", file, obj)
	}
	return tensors, nil
}

// pickledFile is a read pytorch_model.bin, for Load.
type pickledFile struct {
	path    string
	tensors map[string]*pickledTensor
}

func (p *pickledFile) source() string { return p.path }

func (p *pickledFile) shapeOf(name string) ([]int, bool) {
	t, ok := p.tensors[name]
	if !ok {
		return nil, false
	}
	return t.shape, true
}

func (p *pickledFile) readInto(name string, dst []float32) error {
	t := p.tensors[name]
	if len(t.values) != len(dst) {
		return fmt.Errorf("t5: %s: tensor %q has %d elements, want %d", p.path, name, len(t.values), len(dst))
	}
	copy(dst, t.values)
	return nil
}

func (p *pickledFile) names() []string {
	out := make([]string, 0, len(p.tensors))
	for n := range p.tensors {
		out = append(out, n)
	}
	return out
}
