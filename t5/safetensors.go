package t5

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"unsafe"
)

// TensorInfo is one tensor's entry in a safetensors header.
type TensorInfo struct {
	DType   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets [2]int `json:"data_offsets"`
}

// Safetensors is an opened (memory-mapped) safetensors file.
type Safetensors struct {
	Path    string
	Tensors map[string]TensorInfo
	data    []byte // the bytes after the header
	mapped  []byte // the whole mapping, for Close
}

// OpenSafetensors maps a safetensors file and reads its header: an 8-byte
// little-endian header length, a JSON header, then the tensors' bytes.
func OpenSafetensors(path string) (*Safetensors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("t5: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("t5: %w", err)
	}
	if st.Size() < 8 {
		return nil, fmt.Errorf("t5: %s: %d bytes is too short for a safetensors file", path, st.Size())
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("t5: mmap %s: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(m[:8])
	if n > uint64(len(m)-8) {
		syscall.Munmap(m)
		return nil, fmt.Errorf("t5: %s: header length %d exceeds the file", path, n)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(m[8:8+n], &raw); err != nil {
		syscall.Munmap(m)
		return nil, fmt.Errorf("t5: %s: header: %w", path, err)
	}
	s := &Safetensors{Path: path, Tensors: map[string]TensorInfo{}, data: m[8+n:], mapped: m}
	for name, v := range raw {
		if name == "__metadata__" {
			continue
		}
		var ti TensorInfo
		if err := json.Unmarshal(v, &ti); err != nil {
			s.Close()
			return nil, fmt.Errorf("t5: %s: tensor %q: %w", path, name, err)
		}
		if ti.Offsets[0] < 0 || ti.Offsets[1] > len(s.data) || ti.Offsets[0] > ti.Offsets[1] {
			s.Close()
			return nil, fmt.Errorf("t5: %s: tensor %q: its bytes %v lie beyond the file's %d bytes of data: the file is truncated or damaged", path, name, ti.Offsets, len(s.data))
		}
		s.Tensors[name] = ti
	}
	return s, nil
}

func (s *Safetensors) source() string { return s.Path }

func (s *Safetensors) names() []string {
	out := make([]string, 0, len(s.Tensors))
	for n := range s.Tensors {
		out = append(out, n)
	}
	return out
}

func (s *Safetensors) shapeOf(name string) ([]int, bool) {
	ti, ok := s.Tensors[name]
	return ti.Shape, ok
}

func (s *Safetensors) readInto(name string, dst []float32) error { return s.Read(name, dst) }

// Close unmaps the file.
func (s *Safetensors) Close() error {
	if s.mapped == nil {
		return nil
	}
	err := syscall.Munmap(s.mapped)
	s.mapped, s.data = nil, nil
	return err
}

// Read converts tensor name to float32 into dst (which must have its
// element count). F32, F16 and BF16 are read; I64 too, for test inputs.
func (s *Safetensors) Read(name string, dst []float32) error {
	ti, ok := s.Tensors[name]
	if !ok {
		return fmt.Errorf("t5: %s: no tensor %q", s.Path, name)
	}
	b := s.data[ti.Offsets[0]:ti.Offsets[1]]
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	if n != len(dst) {
		return fmt.Errorf("t5: %s: tensor %q has %d elements, want %d", s.Path, name, n, len(dst))
	}
	size := map[string]int{"F32": 4, "F16": 2, "BF16": 2, "I64": 8}[ti.DType]
	if size == 0 {
		return fmt.Errorf("t5: %s: tensor %q has dtype %s (want F32, F16 or BF16)", s.Path, name, ti.DType)
	}
	if len(b) != n*size {
		return fmt.Errorf("t5: %s: tensor %q: %d bytes for %d %s values", s.Path, name, len(b), n, ti.DType)
	}
	for i := range dst {
		switch ti.DType {
		case "F32":
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		case "BF16":
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		case "F16":
			dst[i] = HalfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		case "I64":
			dst[i] = float32(int64(binary.LittleEndian.Uint64(b[8*i:])))
		}
	}
	return nil
}

// ReadInts reads an integer tensor (I64 or I32) as int32.
func (s *Safetensors) ReadInts(name string) ([]int32, []int, error) {
	ti, ok := s.Tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("t5: %s: no tensor %q", s.Path, name)
	}
	b := s.data[ti.Offsets[0]:ti.Offsets[1]]
	var out []int32
	switch ti.DType {
	case "I64":
		for i := 0; i+8 <= len(b); i += 8 {
			out = append(out, int32(int64(binary.LittleEndian.Uint64(b[i:]))))
		}
	case "I32":
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, int32(binary.LittleEndian.Uint32(b[i:])))
		}
	default:
		return nil, nil, fmt.Errorf("t5: %s: tensor %q has dtype %s, want an integer type", s.Path, name, ti.DType)
	}
	return out, ti.Shape, nil
}

// HalfToFloat converts an IEEE 754 binary16 value.
func HalfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// WriteSafetensors writes float32 tensors in the safetensors layout, names
// sorted as save_pretrained writes them.
func WriteSafetensors(path string, names []string, shapes [][]int, data [][]float32) error {
	ts := make([]SafetensorsTensor, len(names))
	for i := range names {
		ts[i] = SafetensorsTensor{Name: names[i], Shape: shapes[i], F32: data[i]}
	}
	return WriteSafetensorsTensors(path, ts)
}

// SafetensorsTensor is one tensor to write: F32 data, or F16 (binary16
// bits) when F32 is nil.
type SafetensorsTensor struct {
	Name  string
	Shape []int
	F32   []float32
	F16   []uint16
}

// WriteSafetensorsTensors writes tensors in the safetensors layout, names
// sorted, streaming to a temporary file of this process that is renamed
// into place: readers never see half a file, and parallel writers of the
// same path do not collide.
func WriteSafetensorsTensors(path string, ts []SafetensorsTensor) error {
	type entry struct {
		DType   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		Offsets [2]int `json:"data_offsets"`
	}
	order := make([]int, len(ts))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return ts[order[a]].Name < ts[order[b]].Name })
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := 0
	for _, i := range order {
		t := ts[i]
		dtype, n := "F32", 4*len(t.F32)
		if t.F32 == nil {
			dtype, n = "F16", 2*len(t.F16)
		}
		header[t.Name] = entry{DType: dtype, Shape: t.Shape, Offsets: [2]int{off, off + n}}
		off += n
		for off%4 != 0 { // keep every F32 tensor 4-byte aligned for Float32s
			off++
		}
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("t5: %w", err)
	}
	for len(hj)%8 != 0 { // align the data as the reference writer does
		hj = append(hj, ' ')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("t5: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("t5: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var word [8]byte
	binary.LittleEndian.PutUint64(word[:], uint64(len(hj)))
	w.Write(word[:])
	w.Write(hj)
	written := 0
	for _, i := range order {
		t := ts[i]
		for _, v := range t.F32 {
			binary.LittleEndian.PutUint32(word[:4], math.Float32bits(v))
			w.Write(word[:4])
		}
		for _, v := range t.F16 {
			binary.LittleEndian.PutUint16(word[:2], v)
			w.Write(word[:2])
		}
		written += 4*len(t.F32) + 2*len(t.F16)
		for written%4 != 0 {
			w.WriteByte(0)
			written++
		}
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("t5: write %s: %w", path, err)
	}
	return nil
}

// Float32s returns an F32 tensor's values as a slice over the mapped file,
// without a copy (the file must stay open while it is used); ok is false
// for other dtypes or an unaligned tensor. Safetensors is little-endian,
// as every platform this builds for.
func (s *Safetensors) Float32s(name string) (values []float32, shape []int, ok bool) {
	ti, found := s.Tensors[name]
	if !found || ti.DType != "F32" {
		return nil, nil, false
	}
	b := s.data[ti.Offsets[0]:ti.Offsets[1]]
	if len(b) == 0 {
		return []float32{}, ti.Shape, true
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 || len(b)%4 != 0 {
		return nil, nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), ti.Shape, true
}

// ReadAll returns tensor name converted to float32, with its shape.
func (s *Safetensors) ReadAll(name string) ([]float32, []int, error) {
	ti, ok := s.Tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("t5: %s: no tensor %q", s.Path, name)
	}
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	out := make([]float32, n)
	return out, ti.Shape, s.Read(name, out)
}

// ReadBatch reads the batch of a reference file written by Hugging Face
// tests: input_ids and labels (B, S) and (B, T), attention_mask (B, S).
func (s *Safetensors) ReadBatch() (Batch, error) {
	ids, shape, err := s.ReadInts("input_ids")
	if err != nil {
		return Batch{}, err
	}
	am, _, err := s.ReadInts("attention_mask")
	if err != nil {
		return Batch{}, err
	}
	labels, lshape, err := s.ReadInts("labels")
	if err != nil {
		return Batch{}, err
	}
	mask := make([]bool, len(am))
	for i, v := range am {
		mask[i] = v != 0
	}
	return Batch{B: shape[0], S: shape[1], T: lshape[1], Input: ids, Mask: mask, Labels: labels}, nil
}
