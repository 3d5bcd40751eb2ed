//go:build cgo && linux

package nn

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include <string.h>
#include "cuda_loader.h"

// Device addresses cross from Go as integers; these turn them into the
// pointers cuBLAS takes (go vet rightly refuses uintptr→unsafe.Pointer).
static int rs_sgemm(rs_cuda* c, cublasHandle_t h, int opA, int opB, int m, int n, int k, float alpha,
		CUdeviceptr A, int lda, CUdeviceptr B, int ldb, float beta, CUdeviceptr C, int ldc) {
	return c->cublasSgemm_v2(h, opA, opB, m, n, k, &alpha, (const float*)A, lda, (const float*)B, ldb, &beta, (float*)C, ldc);
}

static int rs_sgemm_batched(rs_cuda* c, cublasHandle_t h, int opA, int opB, int m, int n, int k, float alpha,
		CUdeviceptr A, int lda, long long sA, CUdeviceptr B, int ldb, long long sB, float beta,
		CUdeviceptr C, int ldc, long long sC, int batch) {
	return c->cublasSgemmStridedBatched(h, opA, opB, m, n, k, &alpha, (const float*)A, lda, sA, (const float*)B, ldb, sB,
		&beta, (float*)C, ldc, sC, batch);
}

static int rs_gemm_ex(rs_cuda* c, cublasHandle_t h, int opA, int opB, int m, int n, int k, float alpha,
		CUdeviceptr A, int aType, int lda, CUdeviceptr B, int bType, int ldb, float beta, CUdeviceptr C, int ldc) {
	return c->cublasGemmEx(h, opA, opB, m, n, k, &alpha, (const void*)A, aType, lda, (const void*)B, bType, ldb,
		&beta, (void*)C, 0, ldc, 68, -1); // C fp32, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT
}

static int rs_gemm_batched_ex(rs_cuda* c, cublasHandle_t h, int opA, int opB, int m, int n, int k, float alpha,
		CUdeviceptr A, int aType, int lda, long long sA, CUdeviceptr B, int bType, int ldb, long long sB, float beta,
		CUdeviceptr C, int ldc, long long sC, int batch) {
	return c->cublasGemmStridedBatchedEx(h, opA, opB, m, n, k, &alpha, (const void*)A, aType, lda, sA, (const void*)B, bType, ldb, sB,
		&beta, (void*)C, 0, ldc, sC, batch, 68, -1);
}
*/
import "C"

import (
	"embed"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The kernels, compiled by `go generate` (nvcc, compute_70 PTX that the
// driver JIT-compiles for the GPU at hand) and committed, so a normal
// build needs no CUDA toolkit.
//
//go:generate sh cuda/generate.sh
//go:embed cuda/*.ptx
var ptxFiles embed.FS

// CUDA is one NVIDIA GPU, driven through the driver API and cuBLAS loaded
// at run time. Every CUDA call runs on one locked OS thread (a context is
// current per thread; calls from another thread silently do nothing), and
// handles live in C memory, so cgo's pointer rules hold.
//
// Work is queued on one stream. Errors are sticky, as in bufio.Writer:
// the first failure is kept, later operations do nothing, and Err or Sync
// reports it.
type CUDA struct {
	lib    *C.rs_cuda
	ctx    C.CUcontext
	dev    C.CUdevice
	stream C.CUstream
	blas   C.cublasHandle_t
	mods   []C.CUmodule
	funcs  map[string]C.CUfunction
	calls  chan func()
	info   GPUInfo
	err    error
	life   sync.RWMutex // held to use the device, taken exclusively to close it
	closed bool

	kernels, blasCalls, syncs, memsets, copies atomic.Int64 // work queued and waits, for Calls

	// precision is what products read their operands at: fp32 and tf32
	// are cuBLAS math modes; bf16 converts the operands (to_bf16) and
	// multiplies them with cublasGemmEx, accumulating in fp32.
	precision Precision
	// sharedBF16, inside sharingOperands, keeps the bf16 copies of the
	// operands one op's products read, so that one two of them read is
	// converted once. CUDA thread only.
	sharedBF16 map[bf16Key]Buffer

	mem         deviceAllocator
	chunkTables map[string]*chunkTableEntry // chunkTable's cache, by content
	chunkUses   uint64                      // chunkTable's calls, its LRU clock
	staging     unsafe.Pointer              // pinned host memory for host↔device copies
	stageN      int                         // its size in bytes
	// stageUsed is how much of staging holds uploads that the stream may
	// not have copied yet: each upload takes the next free bytes, and only
	// a full buffer waits, so uploads do not stop the host from queueing
	// work ahead of the GPU. Every wait for the stream frees it all.
	stageUsed int
}

// OpenGPU opens the GPU as a Backend.
func OpenGPU(o CUDAOptions) (GPU, error) {
	c, err := OpenCUDA(o)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// OpenCUDA loads the driver and cuBLAS, creates a context, a stream and a
// cuBLAS handle on device o.Device, and loads the embedded kernels.
func OpenCUDA(o CUDAOptions) (*CUDA, error) {
	o = o.withDefaults()
	c := &CUDA{calls: make(chan func(), 4096), funcs: map[string]C.CUfunction{}}
	started := make(chan struct{})
	go c.loop(started)
	<-started
	var err error
	c.do(func() { err = c.open(o) })
	if err != nil {
		c.shutdown()
		return nil, err
	}
	return c, nil
}

// loop runs closures from c.calls on one locked OS thread until the channel closes.
func (c *CUDA) loop(started chan<- struct{}) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	close(started)
	for f := range c.calls {
		f()
	}
}

// do runs f on the CUDA thread and waits for it.
func (c *CUDA) do(f func()) {
	if !c.try(f) {
		panic("nn: CUDA: used after Close")
	}
}

// post queues f on the CUDA thread and returns at once. Launches, memsets
// and device copies are asynchronous on the stream anyway, so the caller
// need not wait for the thread either; work runs in the order queued, and
// do, which waits, waits for everything queued before it. Errors stay
// sticky and show at the next Sync, Download or Err.
func (c *CUDA) post(f func()) {
	if !c.tryPost(f) {
		panic("nn: CUDA: used after Close")
	}
}

func (c *CUDA) tryPost(f func()) bool {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return false
	}
	c.calls <- f
	return true
}

// try runs f on the CUDA thread unless the device is closed.
func (c *CUDA) try(f func()) bool {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return false
	}
	done := make(chan struct{})
	c.calls <- func() {
		defer close(done)
		f()
	}
	<-done
	return true
}

func (c *CUDA) shutdown() {
	close(c.calls)
}

func (c *CUDA) open(o CUDAOptions) error {
	var errbuf [512]C.char
	driver := C.CString(o.Driver)
	defer C.free(unsafe.Pointer(driver))
	names := make([]*C.char, len(o.BLAS))
	for i, n := range o.BLAS {
		names[i] = C.CString(n)
		defer C.free(unsafe.Pointer(names[i]))
	}
	// The array of C strings must itself be C memory.
	arr := (**C.char)(C.malloc(C.size_t(len(names)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	defer C.free(unsafe.Pointer(arr))
	copy(unsafe.Slice(arr, len(names)), names)
	c.lib = C.rs_cuda_open(driver, arr, C.int(len(names)), &errbuf[0], C.int(len(errbuf)))
	if c.lib == nil {
		return fmt.Errorf("no GPU: cannot load the CUDA libraries: %s", C.GoString(&errbuf[0]))
	}
	if err := c.check("cuInit", C.rs_cuInit(c.lib, 0)); err != nil {
		return fmt.Errorf("no GPU: %w", err)
	}
	return c.setup(o)
}

// check turns a driver result into an error naming the call.
func (c *CUDA) check(call string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s (%d)", call, C.GoString(C.rs_cuda_error_name(c.lib, r)), int(r))
}

func (c *CUDA) checkBLAS(call string, status C.int) error {
	if status == 0 {
		return nil
	}
	return fmt.Errorf("%s: cuBLAS status %d", call, int(status))
}

// fail keeps the first error.
func (c *CUDA) fail(err error) {
	if err != nil && c.err == nil {
		c.err = err
	}
}

const cuDevAttrMultiprocessors, cuDevAttrCapabilityMajor, cuDevAttrCapabilityMinor = 16, 75, 76

func (c *CUDA) setup(o CUDAOptions) error {
	var n C.int
	if err := c.check("cuDeviceGetCount", C.rs_cuDeviceGetCount(c.lib, &n)); err != nil {
		return fmt.Errorf("no GPU: %w", err)
	}
	if int(n) == 0 {
		return errors.New("no GPU: the CUDA driver sees no device")
	}
	if o.Device < 0 || o.Device >= int(n) {
		return fmt.Errorf("no GPU: device %d requested, %d visible", o.Device, int(n))
	}
	if err := c.check("cuDeviceGet", C.rs_cuDeviceGet(c.lib, &c.dev, C.int(o.Device))); err != nil {
		return err
	}
	var name [256]C.char
	var bus [64]C.char
	var total C.size_t
	var major, minor, version C.int
	for _, e := range []error{
		c.check("cuDeviceGetName", C.rs_cuDeviceGetName(c.lib, &name[0], C.int(len(name)), c.dev)),
		c.check("cuDeviceTotalMem", C.rs_cuDeviceTotalMem_v2(c.lib, &total, c.dev)),
		c.check("cuDeviceGetPCIBusId", C.rs_cuDeviceGetPCIBusId(c.lib, &bus[0], C.int(len(bus)), c.dev)),
		c.check("cuDeviceGetAttribute", C.rs_cuDeviceGetAttribute(c.lib, &major, cuDevAttrCapabilityMajor, c.dev)),
		c.check("cuDeviceGetAttribute", C.rs_cuDeviceGetAttribute(c.lib, &minor, cuDevAttrCapabilityMinor, c.dev)),
		c.check("cuDriverGetVersion", C.rs_cuDriverGetVersion(c.lib, &version)),
	} {
		if e != nil {
			return e
		}
	}
	if major < 7 {
		return fmt.Errorf("GPU %s has compute capability %d.%d; the kernels need 7.0 or newer", C.GoString(&name[0]), major, minor)
	}
	if err := c.check("cuDevicePrimaryCtxRetain", C.rs_cuDevicePrimaryCtxRetain(c.lib, &c.ctx, c.dev)); err != nil {
		return err
	}
	if err := c.check("cuCtxSetCurrent", C.rs_cuCtxSetCurrent(c.lib, c.ctx)); err != nil {
		return err
	}
	if err := c.check("cuStreamCreate", C.rs_cuStreamCreate(c.lib, &c.stream, 0)); err != nil {
		return err
	}
	if err := c.checkBLAS("cublasCreate", C.rs_cublasCreate_v2(c.lib, &c.blas)); err != nil {
		return err
	}
	const cublasDefaultMath = 0 // plain fp32: TF32 stays off unless asked for
	var blasVersion C.int
	for _, e := range []error{
		c.checkBLAS("cublasSetStream", C.rs_cublasSetStream_v2(c.lib, c.blas, c.stream)),
		c.checkBLAS("cublasSetMathMode", C.rs_cublasSetMathMode(c.lib, c.blas, cublasDefaultMath)),
		c.checkBLAS("cublasGetVersion", C.rs_cublasGetVersion_v2(c.lib, c.blas, &blasVersion)),
	} {
		if e != nil {
			return e
		}
	}
	if err := c.loadKernels(); err != nil {
		return err
	}
	c.info = GPUInfo{
		Name: C.GoString(&name[0]), Memory: int64(total), Capability: [2]int{int(major), int(minor)},
		Driver: int(version), BLAS: C.GoString(&c.lib.blas_path[0]), BLASVersion: int(blasVersion),
		PCIBusID: C.GoString(&bus[0]),
	}
	c.mem.cuda = c
	return nil
}

// loadKernels JIT-compiles every embedded PTX module and looks up its entries.
func (c *CUDA) loadKernels() error {
	files, err := ptxFiles.ReadDir("cuda")
	if err != nil {
		return err
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".ptx") {
			continue
		}
		src, err := ptxFiles.ReadFile("cuda/" + f.Name())
		if err != nil {
			return err
		}
		text := C.CString(string(src))
		var mod C.CUmodule
		r := C.rs_cuModuleLoadData(c.lib, &mod, unsafe.Pointer(text))
		C.free(unsafe.Pointer(text))
		if err := c.check("cuModuleLoadData "+f.Name(), r); err != nil {
			return err
		}
		c.mods = append(c.mods, mod)
		for _, name := range ptxEntries(string(src)) {
			cname := C.CString(name)
			var fn C.CUfunction
			r := C.rs_cuModuleGetFunction(c.lib, &fn, mod, cname)
			C.free(unsafe.Pointer(cname))
			if err := c.check("cuModuleGetFunction "+name, r); err != nil {
				return err
			}
			c.funcs[name] = fn
		}
	}
	return nil
}

// ptxEntries lists the kernel names a PTX module defines.
func ptxEntries(ptx string) []string {
	var names []string
	for _, line := range strings.Split(ptx, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, ".visible .entry ")
		if !ok {
			continue
		}
		if i := strings.IndexAny(rest, "( "); i >= 0 {
			rest = rest[:i]
		}
		names = append(names, rest)
	}
	sort.Strings(names)
	return names
}

// Info describes the device.
func (c *CUDA) Info() GPUInfo { return c.info }

// Name is the Backend's name.
func (c *CUDA) Name() string { return "cuda" }

// Err returns the first error since the device was opened.
func (c *CUDA) Err() error {
	var err error
	c.do(func() { err = c.err })
	return err
}

// Sync waits for queued work and returns the first error.
func (c *CUDA) Sync() error {
	var err error
	c.do(func() {
		if c.err == nil {
			c.streamSync()
		}
		err = c.err
	})
	return err
}

// Calls counts the kernel launches, cuBLAS calls and host waits so far.
func (c *CUDA) Calls() GPUCalls {
	return GPUCalls{Kernels: c.kernels.Load(), BLAS: c.blasCalls.Load(), Syncs: c.syncs.Load(), Memsets: c.memsets.Load(), Copies: c.copies.Load()}
}

// streamSync waits for the stream on the CUDA thread: a copy back, a full
// staging buffer or Sync. Each one stops the host from queueing work ahead
// of the GPU, so Calls counts them.
func (c *CUDA) streamSync() {
	c.syncs.Add(1)
	c.fail(c.check("cuStreamSynchronize", C.rs_cuStreamSynchronize(c.lib, c.stream)))
	if c.err == nil {
		c.stageUsed = 0 // every queued copy has read its bytes
	}
}

// PeakBytes returns the most device memory in use at once: blocks handed
// out and not yet freed, as torch.cuda.max_memory_allocated counts, not
// what the cache holds besides.
func (c *CUDA) PeakBytes() int64 {
	c.mem.mu.Lock()
	defer c.mem.mu.Unlock()
	return c.mem.peakInUse
}

// Close frees the device memory, the modules, the stream and the cuBLAS
// handle, releases the context and stops the CUDA thread.
func (c *CUDA) Close() error {
	// Mark the device closed before tearing it down, so that nothing can
	// be queued behind the teardown (a collected graph's late Free would
	// otherwise reach an allocator that has already let everything go).
	// Work queued before this runs first.
	c.life.Lock()
	if c.closed {
		c.life.Unlock()
		return nil
	}
	c.closed = true
	c.life.Unlock()
	var err error
	done := make(chan struct{})
	c.calls <- func() {
		defer close(done)
		c.streamSync()
		c.mem.release()
		if c.staging != nil {
			C.rs_cuMemFreeHost(c.lib, c.staging)
			c.staging = nil
		}
		for _, m := range c.mods {
			C.rs_cuModuleUnload(c.lib, m)
		}
		if c.blas != nil {
			C.rs_cublasDestroy_v2(c.lib, c.blas)
		}
		if c.stream != nil {
			C.rs_cuStreamDestroy_v2(c.lib, c.stream)
		}
		C.rs_cuDevicePrimaryCtxRelease_v2(c.lib, c.dev)
		C.rs_cuda_close(c.lib)
		err = c.err
	}
	<-done
	c.shutdown()
	return err
}

// deviceAllocator caches device memory: a freed block goes on the free
// list of its size class and is handed out again, so a training step
// calls cuMemAlloc only while it grows. See sizeClass for the classes. A
// cached block needs no driver call,
// so callers take one on their own goroutine (cached), without waiting
// for the CUDA thread; the rest runs there. mu guards the maps and counts.
type deviceAllocator struct {
	mu        sync.Mutex
	cuda      *CUDA
	free      map[int][]uint64 // size class in bytes → blocks
	size      map[uint64]int   // live block → its class
	reserved  int64            // bytes held from the driver
	inUse     int64            // bytes of the live blocks
	peakInUse int64
}

// sizeClass rounds a request up to its block size: eight classes per
// doubling (steps of an eighth of the power of two below the request),
// the steps at least 256 bytes and at most 2 MiB. A block then wastes
// less than an eighth of itself, and T5's tensors fill theirs exactly
// (768 × 768 floats is 2.25 MiB, 8 × 128 × 768 is 3 MiB). Powers of two,
// the classes before, put a 2.25 MiB weight in 4 MiB: at t5-base, with
// its gradient and AdamW's two moments, a gigabyte of padding.
func sizeClass(bytes int) int {
	const minStep, maxStep = 256, 2 << 20
	if bytes <= minStep {
		return minStep
	}
	below := 1 << (bits.Len(uint(bytes-1)) - 1) // the largest power of two under bytes
	step := min(max(below/8, minStep), maxStep)
	return (bytes + step - 1) / step * step
}

// cached hands out a cached block for bytes, or reports that none is
// free (alloc, on the CUDA thread, then asks the driver). Reuse is safe
// in stream order: a block is back on its free list only once the CUDA
// thread has queued every kernel that used it, and its next user's
// kernels are queued after.
func (a *deviceAllocator) cached(bytes int) (uint64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reuse(sizeClass(bytes))
}

func (a *deviceAllocator) reuse(class int) (uint64, bool) {
	l := a.free[class]
	if len(l) == 0 {
		return 0, false
	}
	p := l[len(l)-1]
	a.free[class] = l[:len(l)-1]
	a.take(p, class)
	return p, true
}

func (a *deviceAllocator) alloc(bytes int) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.free == nil {
		a.free, a.size = map[int][]uint64{}, map[uint64]int{}
	}
	class := sizeClass(bytes)
	if p, ok := a.reuse(class); ok {
		return p, nil
	}
	var p C.CUdeviceptr
	r := C.rs_cuMemAlloc_v2(a.cuda.lib, &p, C.size_t(class))
	if r == cudaErrorOutOfMemory {
		a.trim() // give cached blocks back and try once more
		r = C.rs_cuMemAlloc_v2(a.cuda.lib, &p, C.size_t(class))
	}
	if err := a.cuda.check(fmt.Sprintf("cuMemAlloc(%d bytes; %d reserved)", class, a.reserved), r); err != nil {
		return 0, err
	}
	a.reserved += int64(class)
	a.take(uint64(p), class)
	return uint64(p), nil
}

// take marks block p of class bytes live.
func (a *deviceAllocator) take(p uint64, class int) {
	a.size[p] = class
	a.inUse += int64(class)
	a.peakInUse = max(a.peakInUse, a.inUse)
}

const cudaErrorOutOfMemory = 2

func (a *deviceAllocator) put(p uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	class, ok := a.size[p]
	if !ok {
		panic("nn: CUDA: freeing a buffer that is not live")
	}
	delete(a.size, p)
	a.inUse -= int64(class)
	a.free[class] = append(a.free[class], p)
}

// trim returns every cached block to the driver; mu is held.
func (a *deviceAllocator) trim() {
	for class, l := range a.free {
		for _, p := range l {
			C.rs_cuMemFree_v2(a.cuda.lib, C.CUdeviceptr(p))
			a.reserved -= int64(class)
		}
		delete(a.free, class)
	}
}

// release frees every block, live or cached (Close); a later cached
// finds nothing, so use after Close reaches do, which refuses it.
func (a *deviceAllocator) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.trim()
	for p, class := range a.size {
		C.rs_cuMemFree_v2(a.cuda.lib, C.CUdeviceptr(p))
		a.reserved -= int64(class)
		a.inUse -= int64(class)
		delete(a.size, p)
	}
	a.free = nil
}

// Alloc returns n elements of device memory, uninitialised (the tests
// fill outputs with NaN, so that a kernel that fails to write shows).
func (c *CUDA) Alloc(n int) Buffer {
	if p, ok := c.mem.cached(max(4*n, 4)); ok {
		return Buffer{ptr: p, n: n}
	}
	var b Buffer
	c.do(func() { b = c.alloc(n) })
	return b
}

func (c *CUDA) alloc(n int) Buffer {
	if c.err != nil {
		return Buffer{}
	}
	p, err := c.mem.alloc(max(4*n, 4))
	if err != nil {
		c.fail(err)
		return Buffer{}
	}
	return Buffer{ptr: p, n: n}
}

// Free returns b to the cache; after Close it does nothing (Close freed
// everything), so collected graphs may release late.
func (c *CUDA) Free(bs ...Buffer) {
	c.tryPost(func() { c.release(bs...) })
}

// release returns buffers to the cache on the CUDA thread; nil ones (a
// failed allocation) are skipped.
func (c *CUDA) release(bs ...Buffer) {
	for _, b := range bs {
		if b.ptr != 0 {
			c.mem.put(b.ptr)
		}
	}
}

func (c *CUDA) fill(b Buffer, bits uint32) {
	if c.err != nil || b.n == 0 {
		return
	}
	c.memsets.Add(1)
	c.fail(c.check("cuMemsetD32Async", C.rs_cuMemsetD32Async(c.lib, C.CUdeviceptr(b.ptr), C.uint(bits), C.size_t(b.n), c.stream)))
}

// Zero sets b to 0.
func (c *CUDA) Zero(b Buffer) { c.post(func() { c.fill(b, 0) }) }

// stageAlign keeps each staged upload's bytes on their own 256-byte
// boundary, as cudaMalloc aligns device memory, so that copies start aligned.
const stageAlign = 256

// stage returns pinned host memory for an upload of bytes, after the
// uploads still in flight (stageUsed); host↔device copies from pinned
// memory run at full bus speed (7× the Go heap's, measured). When they do
// not fit, it waits for the stream, which frees the whole buffer.
func (c *CUDA) stage(bytes int) unsafe.Pointer {
	if c.stageUsed+bytes > c.stageN && c.stageUsed > 0 {
		c.streamSync()
	}
	if !c.stageAtLeast(bytes) {
		return nil
	}
	return unsafe.Add(c.staging, c.stageUsed)
}

// stageAtLeast grows the staging buffer to hold bytes, waiting first for
// the uploads that read the old one.
func (c *CUDA) stageAtLeast(bytes int) bool {
	if c.err != nil {
		return false
	}
	if bytes <= c.stageN {
		return true
	}
	if c.stageUsed > 0 {
		c.streamSync()
		if c.err != nil {
			return false
		}
	}
	if c.staging != nil {
		C.rs_cuMemFreeHost(c.lib, c.staging)
		c.staging, c.stageN = nil, 0
	}
	n := max(bytes, 1<<20)
	if err := c.check("cuMemAllocHost", C.rs_cuMemAllocHost_v2(c.lib, &c.staging, C.size_t(n))); err != nil {
		c.fail(err)
		return false
	}
	c.stageN = n
	return true
}

// upload queues a copy of host bytes into dst through the staging buffer
// and returns without waiting: src may be reused at once, and the stream
// copies the staged bytes in order with the work around it.
func (c *CUDA) upload(dst uint64, src unsafe.Pointer, bytes int) {
	if c.err != nil || bytes == 0 {
		return
	}
	st := c.stage(bytes)
	if st == nil {
		return
	}
	C.memcpy(st, src, C.size_t(bytes))
	c.fail(c.check("cuMemcpyHtoDAsync", C.rs_cuMemcpyHtoDAsync_v2(c.lib, C.CUdeviceptr(dst), st, C.size_t(bytes), c.stream)))
	c.stageUsed += (bytes + stageAlign - 1) / stageAlign * stageAlign
}

func (c *CUDA) download(dst unsafe.Pointer, src uint64, bytes int) {
	if c.err != nil || bytes == 0 || !c.stageAtLeast(bytes) {
		return
	}
	// From the buffer's start, even under uploads in flight: the stream
	// runs their copies, which read those bytes, before this one writes.
	c.fail(c.check("cuMemcpyDtoHAsync", C.rs_cuMemcpyDtoHAsync_v2(c.lib, c.staging, C.CUdeviceptr(src), C.size_t(bytes), c.stream)))
	c.streamSync()
	if c.err == nil {
		C.memcpy(dst, c.staging, C.size_t(bytes))
	}
}

// Upload copies host values into a new buffer.
func (c *CUDA) Upload(x []float32) Buffer {
	b := c.Alloc(len(x))
	c.Write(b, x)
	return b
}

// UploadInt32 copies ids (token ids, targets, buckets) into a new buffer.
func (c *CUDA) UploadInt32(x []int32) Buffer {
	b := c.Alloc(len(x))
	c.WriteInt32(b, x)
	return b
}

// UploadMask copies a key mask, one byte per key (1 keeps, 0 masks), into
// a new buffer; nil gives the nil Buffer.
func (c *CUDA) UploadMask(m []bool) Buffer {
	if m == nil {
		return Buffer{}
	}
	b := c.Alloc((len(m) + 3) / 4)
	c.WriteMask(b, m)
	return b
}

// Download copies b into dst (len(dst) ≤ b.Len()).
func (c *CUDA) Download(dst []float32, b Buffer) error {
	if len(dst) > b.n {
		return fmt.Errorf("nn: CUDA Download: %d values from a buffer of %d", len(dst), b.n)
	}
	var err error
	c.do(func() {
		if len(dst) > 0 {
			c.download(unsafe.Pointer(&dst[0]), b.ptr, 4*len(dst))
		}
		err = c.err
	})
	return err
}

// Copy copies src into dst on the device.
func (c *CUDA) Copy(dst, src Buffer) {
	c.post(func() {
		if c.err != nil || src.n == 0 {
			return
		}
		if dst.n < src.n {
			c.fail(fmt.Errorf("nn: CUDA Copy: %d values into %d", src.n, dst.n))
			return
		}
		c.copies.Add(1)
		c.fail(c.check("cuMemcpyDtoDAsync", C.rs_cuMemcpyDtoDAsync_v2(c.lib, C.CUdeviceptr(dst.ptr), C.CUdeviceptr(src.ptr), C.size_t(4*src.n), c.stream)))
	})
}

// launch queues kernel name on a one-dimensional grid. Arguments are
// Buffers (their addresses; a nil Buffer is a null pointer), ints (kernel
// int or long long), float32, uint64 or bool (as int).
func (c *CUDA) launch(name string, grid, block int, args ...any) {
	if c.err != nil {
		return
	}
	fn, ok := c.funcs[name]
	if !ok {
		c.fail(fmt.Errorf("nn: CUDA: no kernel %q in the embedded PTX (run go generate ./nn)", name))
		return
	}
	c.kernels.Add(1)
	vals := make([]C.ulonglong, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case Buffer:
			vals[i] = C.ulonglong(v.ptr)
		case int:
			vals[i] = C.ulonglong(uint64(int64(v)))
		case float32:
			vals[i] = C.ulonglong(math.Float32bits(v))
		case uint64:
			vals[i] = C.ulonglong(v)
		case bool:
			if v {
				vals[i] = 1
			}
		default:
			panic(fmt.Sprintf("nn: CUDA launch %s: argument %d has type %T", name, i, a))
		}
	}
	var p *C.ulonglong
	if len(vals) > 0 {
		p = &vals[0]
	}
	c.fail(c.check("cuLaunchKernel "+name, C.rs_cuda_launch(c.lib, fn, C.uint(max(grid, 1)), C.uint(block), c.stream, C.int(len(vals)), p)))
}

// gemm computes the row-major product c = alpha·op(a)·op(b) + beta·c on
// device buffers. cuBLAS is column-major, and a row-major matrix read
// column-major is its transpose, so this asks for cᵀ = op(b)ᵀ·op(a)ᵀ:
// the operands swap and keep their transpose flags.
func (c *CUDA) gemm(transA, transB bool, m, n, k int, alpha float32, a Buffer, lda int, b Buffer, ldb int, beta float32, out Buffer, ldc int) {
	if c.err != nil || m == 0 || n == 0 {
		return
	}
	if k == 0 {
		c.gemmZeroK(m, n, beta, out, ldc, 0, 1)
		return
	}
	if c.precision == BF16 {
		c.gemmBatched(transA, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, out, ldc, 0, 1)
		return
	}
	c.blasCalls.Add(1)
	c.fail(c.checkBLAS("cublasSgemm", C.rs_sgemm(c.lib, c.blas, blasOp(transB), blasOp(transA), C.int(n), C.int(m), C.int(k),
		C.float(alpha), C.CUdeviceptr(b.ptr), C.int(ldb), C.CUdeviceptr(a.ptr), C.int(lda), C.float(beta), C.CUdeviceptr(out.ptr), C.int(ldc))))
}

// gemmBatched runs batch products whose operands start stride elements apart.
func (c *CUDA) gemmBatched(transA, transB bool, m, n, k int, alpha float32, a Buffer, lda, strideA int, b Buffer, ldb, strideB int, beta float32, out Buffer, ldc, strideC, batch int) {
	if c.err != nil || m == 0 || n == 0 || batch == 0 {
		return
	}
	if k == 0 {
		c.gemmZeroK(m, n, beta, out, ldc, strideC, batch)
		return
	}
	if c.precision == BF16 {
		ha := c.bf16Operand(a, transA, m, k, lda, strideA, batch)
		hb := c.bf16Operand(b, transB, k, n, ldb, strideB, batch)
		if c.err == nil { // a failed conversion left a nil operand, which cuBLAS must not read
			c.blasCalls.Add(1)
			c.fail(c.checkBLAS("cublasGemmStridedBatchedEx", C.rs_gemm_batched_ex(c.lib, c.blas, blasOp(transB), blasOp(transA), C.int(n), C.int(m), C.int(k),
				C.float(alpha), C.CUdeviceptr(hb.ptr), cudaR16BF, C.int(ldb), C.longlong(strideB), C.CUdeviceptr(ha.ptr), cudaR16BF, C.int(lda), C.longlong(strideA),
				C.float(beta), C.CUdeviceptr(out.ptr), C.int(ldc), C.longlong(strideC), C.int(batch))))
		}
		if c.sharedBF16 == nil {
			c.release(ha, hb) // the stream runs the product before any later use of the memory
		}
		return
	}
	c.blasCalls.Add(1)
	c.fail(c.checkBLAS("cublasSgemmStridedBatched", C.rs_sgemm_batched(c.lib, c.blas, blasOp(transB), blasOp(transA), C.int(n), C.int(m), C.int(k),
		C.float(alpha), C.CUdeviceptr(b.ptr), C.int(ldb), C.longlong(strideB), C.CUdeviceptr(a.ptr), C.int(lda), C.longlong(strideA),
		C.float(beta), C.CUdeviceptr(out.ptr), C.int(ldc), C.longlong(strideC), C.int(batch))))
}

const cudaR16BF = 14 // cudaDataType CUDA_R_16BF

// bf16Operand converts the elements a product reads of operand x (op(x)
// rows×cols, stored transposed when trans, leading dimension ld, batch
// copies stride apart) to bfloat16 in a new buffer at the same offsets.
func (c *CUDA) bf16Operand(x Buffer, trans bool, rows, cols, ld, stride, batch int) Buffer {
	rows, cols = storedShape(trans, rows, cols)
	extent := (batch-1)*stride + (rows-1)*ld + cols
	if extent > x.n {
		c.fail(fmt.Errorf("nn: CUDA bf16 product: an operand of %d elements read to %d", x.n, extent))
		return Buffer{}
	}
	key := bf16Key{x.ptr, extent}
	if h, ok := c.sharedBF16[key]; ok {
		return h
	}
	h := c.alloc((extent + 1) / 2) // two bf16 to a float32 slot
	c.launch("to_bf16", elementwiseGrid(extent), elementwiseBlock, h, x, extent)
	if c.sharedBF16 != nil {
		c.sharedBF16[key] = h
	}
	return h
}

// bf16Key names the elements of a buffer an operand's conversion read.
type bf16Key struct {
	ptr    uint64
	extent int
}

// sharingOperands runs f, the products of one op's backward, on the CUDA
// thread with each bf16 operand converted once: the output's gradient,
// which both the input's and the weight's products read, is converted for
// the first and reused by the second (autocast's backward reuses its
// saved bf16 operands too). f must not write a buffer it has already read
// as an operand, nor free one and read a new buffer in its place.
func (c *CUDA) sharingOperands(f func()) {
	if c.precision != BF16 {
		f()
		return
	}
	c.sharedBF16 = map[bf16Key]Buffer{}
	f()
	for _, h := range c.sharedBF16 {
		c.release(h)
	}
	c.sharedBF16 = nil
}

// SetPrecision sets what products read their operands at (WithPrecision).
func (c *CUDA) SetPrecision(p Precision) error {
	var err error
	c.do(func() {
		mode := C.int(0) // CUBLAS_DEFAULT_MATH: fp32 in full
		if p == TF32 {
			mode = 3 // CUBLAS_TF32_TENSOR_OP_MATH
		}
		if err = c.checkBLAS("cublasSetMathMode", C.rs_cublasSetMathMode(c.lib, c.blas, mode)); err == nil {
			c.precision = p
		}
	})
	return err
}

func blasOp(trans bool) C.int {
	if trans {
		return 1 // CUBLAS_OP_T
	}
	return 0 // CUBLAS_OP_N
}

// Sgemm is the Backend's product over host slices: operands go to the
// device, the product runs in cuBLAS, c comes back. Activations stay in
// host memory, so this moves every operand across the bus; the device-
// resident ops below avoid that.
func (c *CUDA) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, out []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemm(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(out), ldc)
	extent := func(trans bool, r, cols, ld int) int {
		if trans {
			r, cols = cols, r
		}
		if r == 0 || cols == 0 {
			return 0
		}
		return (r-1)*ld + cols
	}
	na, nb, nc := extent(transA, m, k, lda), extent(transB, k, n, ldb), extent(false, m, n, ldc)
	var err error
	c.do(func() {
		da, db, dc := c.alloc(max(na, 1)), c.alloc(max(nb, 1)), c.alloc(nc)
		if na > 0 {
			c.upload(da.ptr, unsafe.Pointer(&a[0]), 4*na)
		}
		if nb > 0 {
			c.upload(db.ptr, unsafe.Pointer(&b[0]), 4*nb)
		}
		if beta != 0 || ldc != n { // c's old values, or the gaps between its rows, must survive
			c.upload(dc.ptr, unsafe.Pointer(&out[0]), 4*nc)
		}
		c.gemm(transA, transB, m, n, k, alpha, da, lda, db, ldb, beta, dc, ldc)
		c.download(unsafe.Pointer(&out[0]), dc.ptr, 4*nc)
		c.release(da, db, dc)
		err = c.err
	})
	if err != nil {
		// The Backend interface has no error: a failed product must not
		// pass for a computed one.
		panic(fmt.Sprintf("nn: CUDA Sgemm: %v", err))
	}
}

// gemmZeroK scales C by beta: a product over an empty inner dimension,
// which cuBLAS's documentation leaves open (a gradient set by its first
// writer, beta 0, over an empty batch must come out zeros).
func (c *CUDA) gemmZeroK(m, n int, beta float32, out Buffer, ldc, strideC, batch int) {
	scale := func(b Buffer) {
		if beta == 0 {
			c.fill(b, 0)
			return
		}
		c.launch("scale_forward", elementwiseGrid(b.n), elementwiseBlock, b, b, beta, b.n)
	}
	switch {
	case beta == 1:
	case ldc == n && (batch == 1 || strideC == m*n):
		scale(out.Slice(0, batch*m*n))
	default:
		for b := range batch {
			for i := range m {
				lo := b*strideC + i*ldc
				scale(out.Slice(lo, lo+n))
			}
		}
	}
}

// Write copies host values into an existing buffer.
func (c *CUDA) Write(dst Buffer, src []float32) { write(c, "Write", dst, src) }

// WriteInt32 copies ids into an existing buffer.
func (c *CUDA) WriteInt32(dst Buffer, src []int32) { write(c, "WriteInt32", dst, src) }

// WriteMask copies a key mask into an existing buffer of (len(m)+3)/4
// words, one byte per key.
func (c *CUDA) WriteMask(dst Buffer, m []bool) {
	bytes := make([]byte, (len(m)+3)/4*4)
	for i, v := range m {
		if v {
			bytes[i] = 1
		}
	}
	write(c, "WriteMask", dst, bytes)
}

// write copies src's bytes into dst through the staging buffer.
func write[T float32 | int32 | byte](c *CUDA, op string, dst Buffer, src []T) {
	if len(src) == 0 {
		return
	}
	bytes := len(src) * int(unsafe.Sizeof(src[0]))
	if bytes > 4*dst.n {
		panic(fmt.Sprintf("nn: CUDA %s: %d bytes into a buffer of %d", op, bytes, 4*dst.n))
	}
	c.do(func() { c.upload(dst.ptr, unsafe.Pointer(&src[0]), bytes) })
}

// Fill sets every element of b to v.
func (c *CUDA) Fill(b Buffer, v float32) { c.post(func() { c.fill(b, math.Float32bits(v)) }) }
