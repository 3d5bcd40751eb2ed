// Package cudatest builds the CPU emulator of the CUDA driver and cuBLAS
// (nn/cuda/emu) for tests, so nn's CUDA backend runs its real loading,
// launch and product code on machines without a GPU.
package cudatest

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var built struct {
	once sync.Once
	path string
	err  error
}

// MaxBlockEnv caps the emulator's threads per block. The kernels compute
// the same for any block size; a cap of a few threads keeps whole-model
// tests fast while still running the block reductions across threads.
const MaxBlockEnv = "RS_EMU_MAX_BLOCK"

// Emulator returns the path of the emulator library, built with g++ once
// per source version into the user cache (so reruns skip the compile and
// test runs leave nothing behind); pass it as both nn.CUDAOptions.Driver
// and BLAS.
func Emulator(t testing.TB) string {
	t.Helper()
	built.once.Do(func() { built.path, built.err = build() })
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func build() (string, error) {
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "cuda")
	args := []string{"-std=c++20", "-O1", "-shared", "-fPIC", "-DRS_EMULATE", "-I" + src,
		filepath.Join(src, "emu", "driver.cpp"), "-lpthread"}
	// The library's name is a hash of every source and the flags.
	h := sha256.New()
	files, _ := filepath.Glob(filepath.Join(src, "*.cu*"))
	more, _ := filepath.Glob(filepath.Join(src, "emu", "*"))
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	fmt.Fprintln(h, args[:5])
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "readsweep", "cuda-emulator")
	path := filepath.Join(dir, fmt.Sprintf("libcuda-emu-%x.so", h.Sum(nil)[:8]))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "build-*.so")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("g++", append(args, "-o", tmp.Name())...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the CUDA emulator needs g++ (Debian: apt install g++): %v\n%s", err, out)
	}
	// Concurrent test binaries may build it too: the rename is atomic.
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
