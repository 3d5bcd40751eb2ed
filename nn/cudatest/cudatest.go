// Package cudatest builds the CPU emulator of the CUDA driver and cuBLAS
// (nn/cuda/emu) for tests, so nn's CUDA backend runs its real loading,
// launch and product code on machines without a GPU.
package cudatest

import (
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
// per test binary; pass it as both nn.CUDAOptions.Driver and BLAS.
func Emulator(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		_, self, _, _ := runtime.Caller(0)
		src := filepath.Join(filepath.Dir(self), "..", "cuda")
		dir, err := os.MkdirTemp("", "nn-cuda-emu")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "libcuda-emu.so")
		cmd := exec.Command("g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-DRS_EMULATE", "-I"+src,
			filepath.Join(src, "emu", "driver.cpp"), "-o", built.path, "-lpthread")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("building the CUDA emulator needs g++ (Debian: apt install g++): %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}
