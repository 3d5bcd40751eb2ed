package nn

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// EnvOpenBLAS names the CBLAS library to open instead of the usual names
// (a path or a soname), or "off" for gonum's pure-Go BLAS without a notice.
const EnvOpenBLAS = "READSWEEP_OPENBLAS"

// openBLASNames are tried in order: Debian's and conda's runtime library
// (Debian: libopenblas0-pthread), the development symlink and OpenBLAS's
// own `make install` prefix, then Fedora's pthreads and OpenMP builds.
var openBLASNames = []string{
	"libopenblas.so.0",
	"libopenblas.so",
	"/opt/OpenBLAS/lib/libopenblas.so",
	"libopenblasp.so.0",
	"libopenblaso.so.0",
}

// BLASInfo says which BLAS library serves matrix products.
type BLASInfo struct {
	Path    string // the file that opened, symlinks resolved
	Config  string // openblas_get_config(): version and build options
	Core    string // openblas_get_corename(): the kernels it picked for this CPU
	Threads int    // openblas_get_num_threads() when it opened
	// SplitByGo: OpenBLAS runs one thread and large products are cut
	// into Threads parts, one goroutine each (see OpenBLAS).
	SplitByGo bool
}

func (i BLASInfo) String() string {
	how := "threads"
	if i.SplitByGo {
		how = "threads, products split by Go"
	}
	return fmt.Sprintf("%s (%s; core %s; %d %s)", i.Path, i.Config, i.Core, i.Threads, how)
}

// loadOpenBLAS opens the library once per process: dlopen is process-wide,
// and the result never changes after the first call.
var loadOpenBLAS = sync.OnceValues(func() (OpenBLAS, error) {
	names := openBLASNames
	switch v := os.Getenv(EnvOpenBLAS); v {
	case "":
	case "off":
		return OpenBLAS{}, errOpenBLASOff
	default:
		names = []string{v}
	}
	o, err := openOpenBLAS(names)
	if err != nil {
		return OpenBLAS{}, fmt.Errorf("no OpenBLAS opens (%s)", err)
	}
	return o, nil
})

var errOpenBLASOff = errors.New(EnvOpenBLAS + "=off")

// LoadOpenBLAS returns the OpenBLAS backend, opened at run time from the
// first of openBLASNames (or $READSWEEP_OPENBLAS) that opens, or why none did.
func LoadOpenBLAS() (OpenBLAS, error) { return loadOpenBLAS() }

// DefaultBackend is OpenBLAS where a library opens, else gonum's pure-Go
// BLAS, saying once on stderr what to install for speed.
func DefaultBackend() Backend {
	o, err := loadOpenBLAS()
	if err == nil {
		return o
	}
	if !errors.Is(err, errOpenBLASOff) {
		gonumNotice.Do(func() { writeGonumNotice(os.Stderr, err) })
	}
	return Gonum{}
}

var gonumNotice sync.Once

// writeGonumNotice tells a user on the slow path how to leave it. The
// speed-up is from `go test -bench Sgemm ./nn/` on t5-small's products
// (2 cores, OpenBLAS 0.3.21 against gonum v0.17).
func writeGonumNotice(w io.Writer, err error) {
	if !canDlopen {
		fmt.Fprintf(w, "readsweep: matrix products use gonum's pure-Go BLAS: %v.\n"+
			"  For ~%s faster products rebuild with cgo (CGO_ENABLED=1, the default where gcc is installed) and install OpenBLAS.\n",
			err, gonumSlowdown)
		return
	}
	fmt.Fprintf(w, "readsweep: matrix products use gonum's pure-Go BLAS: %v.\n"+
		"  For ~%s faster products install OpenBLAS (Debian/Ubuntu: apt install libopenblas0-pthread; Fedora: dnf install openblas-threads),\n"+
		"  or point %s at a libopenblas.so (conda's, or one you built); %s=off silences this.\n",
		err, gonumSlowdown, EnvOpenBLAS, EnvOpenBLAS)
}

// BLASDescription says in one line which BLAS the default backend uses.
func BLASDescription() string {
	o, err := loadOpenBLAS()
	if err != nil {
		return "gonum pure-Go BLAS (" + err.Error() + ")"
	}
	return "OpenBLAS " + o.Info().String()
}

// checkSgemm multiplies a known 2×2 product through be.
func checkSgemm(be Backend) error {
	a := []float32{1, 2, 3, 4}
	b := []float32{5, 6, 7, 8}
	c := make([]float32, 4)
	be.Sgemm(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2)
	if want := []float32{19, 22, 43, 50}; c[0] != want[0] || c[1] != want[1] || c[2] != want[2] || c[3] != want[3] {
		return fmt.Errorf("cblas_sgemm gives %v for a product that is %v (an ILP64 build?)", c, want)
	}
	return nil
}

// gonumSlowdown is BenchmarkSgemmT5Small's gonum/openblas ratio here.
const gonumSlowdown = "10×"
