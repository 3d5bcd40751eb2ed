//go:build !cgo || !linux

package nn

import "errors"

// canDlopen says this build can open OpenBLAS at run time.
const canDlopen = false

// OpenBLAS is not available in builds without cgo: opening a library at
// run time needs dlopen.
type OpenBLAS struct{ info BLASInfo }

func (OpenBLAS) Name() string { return "openblas" }

// Info says which library opened and how it was built.
func (o OpenBLAS) Info() BLASInfo { return o.info }

func (OpenBLAS) Sgemm(bool, bool, int, int, int, float32, []float32, int, []float32, int, float32, []float32, int) {
	panic("nn: OpenBLAS used in a build without cgo")
}

func openOpenBLAS([]string) (OpenBLAS, error) {
	return OpenBLAS{}, errors.New("this binary was built without cgo (or not for Linux), so it cannot open OpenBLAS at run time")
}
