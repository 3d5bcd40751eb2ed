//go:build !cgo || noopenblas

package nn

// DefaultBackend is gonum's pure-Go BLAS in builds without cgo.
func DefaultBackend() Backend { return Gonum{} }
