//go:build cgo && linux

package nn

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

// CBLAS's enum values, declared here so that no cblas.h is needed to build.
enum { rsRowMajor = 101, rsNoTrans = 111, rsTrans = 112 };

typedef void (*rs_sgemm_fn)(int order, int transA, int transB, int m, int n, int k, float alpha,
		const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);

typedef struct {
	void* handle;
	rs_sgemm_fn sgemm;
	char* (*get_config)(void);
	char* (*get_corename)(void);
	int (*get_num_threads)(void);
	void (*set_num_threads)(int);
	char path[1024];
} rs_openblas;

// rs_openblas_open returns NULL with err filled when name does not open or
// lacks cblas_sgemm; the openblas_* queries are optional (another CBLAS that
// a user names still works, reporting no configuration).
static rs_openblas* rs_openblas_open(const char* name, char* err, int errlen) {
	void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		snprintf(err, errlen, "%s", dlerror());
		return NULL;
	}
	rs_openblas* b = calloc(1, sizeof *b);
	if (b == NULL) {
		dlclose(h);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	b->handle = h;
	b->sgemm = (rs_sgemm_fn)dlsym(h, "cblas_sgemm");
	if (b->sgemm == NULL) {
		snprintf(err, errlen, "%s opens but has no cblas_sgemm", name);
		dlclose(h);
		free(b);
		return NULL;
	}
	b->get_config = (char* (*)(void))dlsym(h, "openblas_get_config");
	b->get_corename = (char* (*)(void))dlsym(h, "openblas_get_corename");
	b->get_num_threads = (int (*)(void))dlsym(h, "openblas_get_num_threads");
	b->set_num_threads = (void (*)(int))dlsym(h, "openblas_set_num_threads");
	Dl_info info;
	snprintf(b->path, sizeof b->path, "%s", name);
	if (dladdr((void*)b->sgemm, &info) != 0 && info.dli_fname != NULL) {
		snprintf(b->path, sizeof b->path, "%s", info.dli_fname);
	}
	return b;
}

static const char* rs_openblas_config(rs_openblas* b) { return b->get_config ? b->get_config() : ""; }
static const char* rs_openblas_core(rs_openblas* b) { return b->get_corename ? b->get_corename() : ""; }
static int rs_openblas_threads(rs_openblas* b) { return b->get_num_threads ? b->get_num_threads() : 0; }
static int rs_openblas_single_thread(rs_openblas* b) {
	if (b->set_num_threads == NULL) return 0;
	b->set_num_threads(1);
	return 1;
}

static void rs_openblas_sgemm(rs_openblas* b, int transA, int transB, int m, int n, int k, float alpha,
		const float* a, int lda, const float* bm, int ldb, float beta, float* c, int ldc) {
	b->sgemm(rsRowMajor, transA ? rsTrans : rsNoTrans, transB ? rsTrans : rsNoTrans, m, n, k, alpha, a, lda, bm, ldb,
		beta, c, ldc);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// canDlopen says this build can open OpenBLAS at run time.
const canDlopen = true

// OpenBLAS is the backend over a CBLAS library opened at run time, so that
// building needs neither cblas.h nor -lopenblas (see LoadOpenBLAS).
//
// OpenBLAS's own threads spin in sched_yield for a while after every
// product, waiting for the next; between products the trainer runs its own
// kernels on every core, so on a small machine the spinning took a core
// from them (a third of all CPU samples of a packed READ trial on 2
// cores). So OpenBLAS runs one thread, and a large product is cut into
// as many parts as it would have used threads, each multiplied by its own
// goroutine (info.SplitByGo, into info.Threads parts).
type OpenBLAS struct {
	lib  *C.rs_openblas
	info BLASInfo
}

// gemmSplitMin is the smallest product (m·n·k) that is cut: OpenBLAS's own
// threshold for using more than one thread (SMP_THRESHOLD_MIN × 4).
const gemmSplitMin = 65536 * 4

// gemmSplitAlign keeps every part but the last a multiple of the kernels'
// unrolling, so that the parts take their fast paths.
const gemmSplitAlign = 16

func (OpenBLAS) Name() string { return "openblas" }

// Info says which library opened and how it was built.
func (o OpenBLAS) Info() BLASInfo { return o.info }

func (o OpenBLAS) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemm(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	parts := 1
	if o.info.SplitByGo && m*n*k >= gemmSplitMin {
		parts = min(o.info.Threads, runtime.GOMAXPROCS(0))
	}
	rows := m >= n // cut C's rows (op(A)'s), else its columns (op(B)'s)
	size := n
	if rows {
		size = m
	}
	chunk := (size + parts - 1) / parts
	chunk = (chunk + gemmSplitAlign - 1) / gemmSplitAlign * gemmSplitAlign
	if parts <= 1 || chunk >= size {
		o.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	var wg sync.WaitGroup
	for lo := 0; lo < size; lo += chunk {
		hi := min(lo+chunk, size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rows {
				aOff := lo * lda // row lo of op(A)
				if transA {
					aOff = lo
				}
				o.sgemm(transA, transB, hi-lo, n, k, alpha, a[aOff:], lda, b, ldb, beta, c[lo*ldc:], ldc)
			} else {
				bOff := lo // column lo of op(B)
				if transB {
					bOff = lo * ldb
				}
				o.sgemm(transA, transB, m, hi-lo, k, alpha, a, lda, b[bOff:], ldb, beta, c[lo:], ldc)
			}
		}()
	}
	wg.Wait()
}

// sgemm is one call into the library (checked by the caller).
func (o OpenBLAS) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := C.int(0), C.int(0)
	if transA {
		ta = 1
	}
	if transB {
		tb = 1
	}
	C.rs_openblas_sgemm(o.lib, ta, tb, C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda), (*C.float)(unsafe.Pointer(&b[0])), C.int(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

// openOpenBLAS tries names in order and returns the first library that opens
// and multiplies a 2×2 product correctly (an ILP64 build, whose integers are
// 64-bit, would not).
func openOpenBLAS(names []string) (OpenBLAS, error) {
	var missing, tried []string // absent libraries; ones that opened or failed otherwise
	for _, name := range names {
		cname := C.CString(name)
		var buf [512]C.char
		lib := C.rs_openblas_open(cname, &buf[0], C.int(len(buf)))
		C.free(unsafe.Pointer(cname))
		if lib == nil {
			msg := C.GoString(&buf[0])
			if strings.HasSuffix(msg, name+": cannot open shared object file: No such file or directory") {
				missing = append(missing, name)
			} else {
				tried = append(tried, msg)
			}
			continue
		}
		path := C.GoString(&lib.path[0])
		if real, err := filepath.EvalSymlinks(path); err == nil {
			path = real
		}
		o := OpenBLAS{lib: lib, info: BLASInfo{
			Path:    path,
			Config:  strings.TrimSpace(C.GoString(C.rs_openblas_config(lib))),
			Core:    strings.TrimSpace(C.GoString(C.rs_openblas_core(lib))),
			Threads: int(C.rs_openblas_threads(lib)),
		}}
		if err := checkSgemm(o); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", path, err))
			continue
		}
		o.info.SplitByGo = o.info.Threads > 1 && C.rs_openblas_single_thread(lib) != 0
		return o, nil
	}
	if len(missing) > 0 {
		tried = append(tried, "not found: "+strings.Join(missing, ", "))
	}
	return OpenBLAS{}, errors.New(strings.Join(tried, "; "))
}
