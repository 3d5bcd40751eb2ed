//go:build cgo && linux

package nn

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/nn/cudatest"
)

// The CPU emulator of the CUDA driver and cuBLAS (cuda/emu) lets every
// test below run the real loading path, the real launches and the real
// kernels' code on a machine without a GPU; TestCUDAOnGPU runs the same
// checks on a GPU where one exists.

func openEmulated(t *testing.T) *CUDA {
	t.Helper()
	lib := cudatest.Emulator(t)
	// The first cuBLAS name does not exist: the loader must go on to the next.
	c, err := OpenCUDA(CUDAOptions{Driver: lib, BLAS: []string{"/nonexistent/libcublas.so.13", lib}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func TestCUDAMissingDriver(t *testing.T) {
	_, err := OpenCUDA(CUDAOptions{Driver: "/nonexistent/libcuda.so.1"})
	if err == nil || !strings.Contains(err.Error(), "no GPU") || !strings.Contains(err.Error(), "/nonexistent/libcuda.so.1") {
		t.Fatalf("err = %v, want a no-GPU error naming the library", err)
	}
	lib := cudatest.Emulator(t)
	t.Logf("CPU emulator library: %s", lib) // scripts/gpu-check.sh rehearse reads it
	_, err = OpenCUDA(CUDAOptions{Driver: lib, BLAS: []string{"/nonexistent/libcublas.so.12"}})
	if err == nil || !strings.Contains(err.Error(), "no cuBLAS library opens") {
		t.Fatalf("err = %v, want the cuBLAS libraries named", err)
	}
}

func TestCUDANoDevice(t *testing.T) {
	t.Setenv("RS_EMU_DEVICES", "0")
	lib := cudatest.Emulator(t)
	_, err := OpenCUDA(CUDAOptions{Driver: lib, BLAS: []string{lib}})
	if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_NO_DEVICE") {
		t.Fatalf("err = %v, want CUDA_ERROR_NO_DEVICE", err)
	}
}

func TestSelectBackend(t *testing.T) {
	_, gpuErr := OpenGPU(CUDAOptions{})
	be, note, closeFn, err := SelectBackend("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if gpuErr == nil {
		if be.Name() != "cuda" || !strings.HasPrefix(note, "cuda: ") {
			t.Errorf("auto with a GPU: %s, %q", be.Name(), note)
		}
	} else {
		if be.Name() == "cuda" || !strings.Contains(note, "no GPU") {
			t.Errorf("auto without a GPU: %s, %q", be.Name(), note)
		}
		if _, _, _, err := SelectBackend("cuda"); err == nil || !strings.Contains(err.Error(), "device cuda") {
			t.Errorf("cuda without a GPU: err = %v", err)
		}
	}
	if _, _, _, err := SelectBackend("tpu"); err == nil || !strings.Contains(err.Error(), "auto, cpu or cuda") {
		t.Errorf("tpu: err = %v", err)
	}
}

func TestCUDAEmulatedOps(t *testing.T) {
	c := openEmulated(t)
	if got := c.Info().Name; got != "CPU emulator" {
		t.Fatalf("device %q", got)
	}
	checkCUDAOps(t, c)
}

func TestCUDAEmulatedSgemm(t *testing.T) { checkCUDASgemm(t, openEmulated(t)) }

// TestCUDAOnGPU runs the same checks on a real GPU. Build the test binary
// here (go test -c ./nn) and run it there: GPU machines may have no Go.
func TestCUDAOnGPU(t *testing.T) {
	c, err := OpenCUDA(CUDAOptions{})
	if err != nil {
		t.Skipf("no GPU here (%v); TestCUDAEmulated* cover the same code on the CPU", err)
	}
	defer c.Close()
	t.Logf("GPU: %s", c.Info())
	checkCUDAOps(t, c)
	checkCUDASgemm(t, c)
}

// TestPTXUpToDate fails when a kernel source changed after the PTX was
// generated (go generate ./nn, with nvcc).
func TestPTXUpToDate(t *testing.T) {
	sums, err := os.ReadFile("cuda/sources.sha256")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		want, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("cuda/sources.sha256: bad line %q", line)
		}
		src, err := os.ReadFile(filepath.Join("cuda", name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(src)
		if hex.EncodeToString(h[:]) != want {
			t.Errorf("cuda/%s changed since its PTX was generated: run go generate ./nn", name)
		}
		listed[name] = true
	}
	files, _ := filepath.Glob("cuda/*.cu*")
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in cuda/sources.sha256: run go generate ./nn", f)
		}
	}
}

// gpuCheck holds one comparison run: inputs go up, outputs come down and
// are compared with the CPU kernels' results.
type gpuCheck struct {
	t   *testing.T
	c   *CUDA
	rng *rand.Rand
}

func (h *gpuCheck) rand(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(h.rng.NormFloat64())
	}
	return x
}

func (h *gpuCheck) up(x []float32) Buffer { return h.c.Upload(x) }

// out allocates an output buffer: NaN-filled, so an unwritten element fails.
func (h *gpuCheck) out(n int) Buffer {
	b := h.c.Alloc(n)
	h.c.Fill(b, float32(math.NaN()))
	return b
}

// expect compares b with want within tol·(1 + max|want|).
func (h *gpuCheck) expect(name string, b Buffer, want []float32, tol float64) {
	h.t.Helper()
	got := make([]float32, len(want))
	if err := h.c.Download(got, b); err != nil {
		h.t.Fatalf("%s: %v", name, err)
	}
	scale := 0.0
	for _, w := range want {
		if !math.IsNaN(float64(w)) {
			scale = math.Max(scale, math.Abs(float64(w)))
		}
	}
	worst, at := 0.0, -1
	for i := range want {
		gotNaN, wantNaN := math.IsNaN(float64(got[i])), math.IsNaN(float64(want[i]))
		if gotNaN != wantNaN {
			worst, at = math.Inf(1), i // a NaN where the CPU has none, or none where it has one
			break
		}
		if d := math.Abs(float64(got[i]) - float64(want[i])); !gotNaN && d > worst {
			worst, at = d, i
		}
	}
	if worst > tol*(1+scale) {
		h.t.Errorf("%s: element %d: got %v, want %v (|diff| %.3g > %.3g)", name, at, got[at], want[at], worst, tol*(1+scale))
	}
}

const (
	tolPointwise = 2e-6
	tolReduction = 2e-5
	tolProduct   = 1e-4
)

func checkCUDAOps(t *testing.T, c *CUDA) {
	h := &gpuCheck{t: t, c: c, rng: rand.New(rand.NewPCG(9, 9))}
	cpu := DefaultBackend()

	t.Run("matmul", func(t *testing.T) {
		h.t = t
		N, C, OC := 7, 13, 9
		inp, w, bias := h.rand(N*C), h.rand(OC*C), h.rand(OC)
		want := make([]float32, N*OC)
		MatmulForward(cpu, want, inp, w, bias, N, C, OC)
		out := h.out(N * OC)
		c.MatmulForward(out, h.up(inp), h.up(w), h.up(bias), N, C, OC)
		h.expect("MatmulForward", out, want, tolProduct)
		dout := h.rand(N * OC)
		dinp, dw, db := h.rand(N*C), h.rand(OC*C), h.rand(OC)
		gdinp, gdw, gdb := h.up(dinp), h.up(dw), h.up(db)
		MatmulBackward(cpu, dinp, dw, db, dout, inp, w, N, C, OC)
		c.MatmulBackward(gdinp, gdw, gdb, h.up(dout), h.up(inp), h.up(w), N, C, OC)
		h.expect("MatmulBackward dinp", gdinp, dinp, tolProduct)
		h.expect("MatmulBackward dw", gdw, dw, tolProduct)
		h.expect("MatmulBackward dbias", gdb, db, tolReduction)

		// A new gradient is set, not added to: what it held (NaN here)
		// must not show.
		nan := make([]float32, OC*C)
		for i := range nan {
			nan[i] = float32(math.NaN())
		}
		clear(dinp)
		clear(dw)
		MatmulBackward(cpu, dinp, dw, nil, dout, inp, w, N, C, OC)
		gdinp, gdw = h.up(nan[:N*C]), h.up(nan)
		c.matmulBackward(gdinp, gdw, Buffer{}, h.up(dout), h.up(inp), h.up(w), N, C, OC, true, true)
		h.expect("matmulBackward setting dinp", gdinp, dinp, tolProduct)
		h.expect("matmulBackward setting dw", gdw, dw, tolProduct)

		// Over an empty batch the weight's gradient, set, is zeros (cuBLAS
		// is not asked about an empty inner dimension).
		gdw = h.up(nan)
		c.matmulBackward(Buffer{}, gdw, Buffer{}, Buffer{}, Buffer{}, h.up(w), 0, C, OC, false, true)
		h.expect("matmulBackward setting dw over no rows", gdw, make([]float32, OC*C), 0)
	})

	t.Run("embedding", func(t *testing.T) {
		h.t = t
		V, D := 11, 37
		table := h.rand(V * D)
		ids := []int32{3, 0, 10, 3, 7, 3}
		want := make([]float32, len(ids)*D)
		EmbeddingForward(want, table, ids, D)
		gids := c.UploadInt32(ids)
		out := h.out(len(ids) * D)
		c.EmbeddingForward(out, h.up(table), gids, D)
		h.expect("EmbeddingForward", out, want, 0)
		dtable, dout := h.rand(V*D), h.rand(len(ids)*D)
		gdt := h.up(dtable)
		EmbeddingBackward(dtable, dout, ids, D)
		c.EmbeddingBackward(gdt, h.up(dout), gids, D)
		h.expect("EmbeddingBackward", gdt, dtable, tolPointwise)
	})

	t.Run("rmsnorm", func(t *testing.T) {
		h.t = t
		for _, sz := range [][2]int{{5, 37}, {5, 300}, {300, 37}} { // rows shorter and longer than a block; more rows than one pass sums
			N, D := sz[0], sz[1]
			x, w := h.rand(N*D), h.rand(D)
			want, rstd := make([]float32, N*D), make([]float32, N)
			RMSNormForward(want, rstd, x, w, N, D, 1e-6)
			out, grstd := h.out(N*D), h.out(N)
			gx, gw := h.up(x), h.up(w)
			c.RMSNormForward(out, grstd, gx, gw, N, D, 1e-6)
			h.expect("RMSNormForward", out, want, tolReduction)
			h.expect("RMSNormForward rstd", grstd, rstd, tolReduction)
			dout, dx, dw := h.rand(N*D), h.rand(N*D), h.rand(D)
			gdx, gdw := h.up(dx), h.up(dw)
			RMSNormBackward(dx, dw, dout, x, w, rstd, N, D)
			c.RMSNormBackward(gdx, gdw, h.up(dout), gx, gw, grstd, N, D)
			h.expect("RMSNormBackward dx", gdx, dx, tolReduction)
			h.expect("RMSNormBackward dw", gdw, dw, tolReduction)
		}
	})

	t.Run("add_rmsnorm", func(t *testing.T) {
		// The fused residual add and norm against the CPU's add, then norm;
		// the sum's own gradient present or absent, dx or dy not wanted.
		h.t = t
		for _, sz := range [][2]int{{5, 37}, {5, 300}, {300, 37}} {
			N, D := sz[0], sz[1]
			x, y, w := h.rand(N*D), h.rand(N*D), h.rand(D)
			sum, want, rstd := make([]float32, N*D), make([]float32, N*D), make([]float32, N)
			for i := range sum {
				sum[i] = x[i] + y[i]
			}
			RMSNormForward(want, rstd, sum, w, N, D, 1e-6)
			gsum, out, grstd := h.out(N*D), h.out(N*D), h.out(N)
			gw := h.up(w)
			c.AddRMSNormForward(gsum, out, grstd, h.up(x), h.up(y), gw, N, D, 1e-6)
			h.expect("AddRMSNormForward sum", gsum, sum, 0)
			h.expect("AddRMSNormForward", out, want, tolReduction)
			h.expect("AddRMSNormForward rstd", grstd, rstd, tolReduction)
			for _, withSum := range []bool{true, false} {
				dout, dsum, dx, dw := h.rand(N*D), h.rand(N*D), h.rand(N*D), h.rand(D)
				gdx, gdy, gdw := h.up(dx), h.out(N*D), h.up(dw)
				var gdsum Buffer
				total := make([]float32, N*D)
				if withSum {
					gdsum = h.up(dsum)
					copy(total, dsum)
				}
				RMSNormBackward(total, dw, dout, sum, w, rstd, N, D)
				for i := range dx {
					dx[i] += total[i]
				}
				c.AddRMSNormBackward(gdx, Buffer{}, gdw, gdsum, h.up(dout), gsum, gw, grstd, N, D)
				h.expect("AddRMSNormBackward dx", gdx, dx, tolReduction)
				h.expect("AddRMSNormBackward dw", gdw, dw, tolReduction)
				c.Zero(gdy)
				c.AddRMSNormBackward(Buffer{}, gdy, Buffer{}, gdsum, h.up(dout), gsum, gw, grstd, N, D)
				h.expect("AddRMSNormBackward dy", gdy, total, tolReduction)
			}
		}
	})

	t.Run("attention", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			causal  bool
			mask    bool
			bias    bool
			dropout bool
			qOffset int
			// Self-attention lengths (one split and one merge launch for
			// every tensor); keys frozen (no dk); q and k one tensor, so
			// that two gradients add into one buffer.
			self, frozenK, sharedQK bool
		}{
			{"encoder", false, true, true, false, 0, false, false, false},
			{"decoder", true, false, true, true, 0, false, false, false},
			{"cross", false, true, false, true, 0, false, false, false},
			{"cached", true, false, true, false, 4, false, false, false},
			{"self", false, true, true, true, 0, true, false, false},
			{"self, keys frozen", true, false, true, false, 0, true, true, false},
			{"self, q and k one tensor", false, false, true, false, 0, true, false, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h.t = t
				s := AttentionShape{B: 2, Tq: 3, Tk: 5, H: 2, K: 4}
				if tc.qOffset > 0 {
					s.Tq = 1
				}
				if tc.self {
					s.Tq = 5
				}
				HK, P := s.H*s.K, s.B*s.H*s.Tq*s.Tk
				q, k, v := h.rand(s.B*s.Tq*HK), h.rand(s.B*s.Tk*HK), h.rand(s.B*s.Tk*HK)
				if tc.sharedQK {
					k = q
				}
				var bias, drop []float32
				var mask []bool
				var keys DropoutKeys
				if tc.bias {
					bias = h.rand(s.H * s.Tq * s.Tk)
				}
				if tc.mask {
					mask = []bool{true, true, true, false, false, true, true, true, true, true}
				}
				if tc.dropout {
					// The CPU reads the mask the kernels draw from the keys.
					keys = DropoutKeys{Seed: 9, Stream: 4, P: 0.25}
					drop = make([]float32, P)
					gm := h.out(P)
					c.DropoutMask(gm, keys)
					if err := c.Download(drop, gm); err != nil {
						t.Fatal(err)
					}
				}
				want, probs := make([]float32, s.B*s.Tq*HK), make([]float32, P)
				AttentionForward(cpu, want, probs, drop, make([]float32, s.Tq*s.Tk), q, k, v, bias, mask, tc.causal, tc.qOffset, s.B, s.Tq, s.Tk, s.H, s.K)
				gq, gk, gv := h.up(q), h.up(k), h.up(v)
				if tc.sharedQK {
					gk = gq
				}
				var gbias, gscratch Buffer
				if bias != nil {
					gbias = h.up(bias)
				}
				if drop != nil {
					gscratch = h.out(P)
				}
				out, gprobs := h.out(len(want)), h.out(P)
				c.AttentionForward(out, gprobs, gscratch, gq, gk, gv, gbias, c.UploadMask(mask), keys, tc.causal, tc.qOffset, s)
				h.expect("AttentionForward probs", gprobs, probs, tolReduction)
				h.expect("AttentionForward out", out, want, tolProduct)

				dout := h.rand(len(want))
				dq, dk, dv := h.rand(len(q)), h.rand(len(k)), h.rand(len(v))
				var dbias []float32
				var gdbias Buffer
				if bias != nil {
					dbias = h.rand(len(bias))
					gdbias = h.up(dbias)
				}
				gdq, gdk, gdv := h.up(dq), h.up(dk), h.up(dv)
				switch {
				case tc.frozenK:
					dk, gdk = nil, Buffer{}
				case tc.sharedQK:
					dk, gdk = dq, gdq
				}
				AttentionBackward(cpu, dq, dk, dv, dbias, make([]float32, 2*s.Tq*s.Tk), dout, probs, drop, q, k, v, s.B, s.Tq, s.Tk, s.H, s.K)
				c.AttentionBackward(gdq, gdk, gdv, gdbias, h.out(2*P), h.up(dout), gprobs, gq, gk, gv, keys, s)
				h.expect("AttentionBackward dq", gdq, dq, tolProduct)
				if dk != nil {
					h.expect("AttentionBackward dk", gdk, dk, tolProduct)
				}
				h.expect("AttentionBackward dv", gdv, dv, tolProduct)
				if bias != nil {
					h.expect("AttentionBackward dbias", gdbias, dbias, tolProduct)
				}
				if tc.frozenK || tc.sharedQK {
					return
				}

				// New gradients are set, not added to: what they held (NaN
				// here) must not show.
				nans := func(n int) Buffer {
					x := make([]float32, n)
					for i := range x {
						x[i] = float32(math.NaN())
					}
					return h.up(x)
				}
				clear(dq)
				clear(dk)
				clear(dv)
				AttentionBackward(cpu, dq, dk, dv, nil, make([]float32, 2*s.Tq*s.Tk), dout, probs, drop, q, k, v, s.B, s.Tq, s.Tk, s.H, s.K)
				gdq, gdk, gdv = nans(len(dq)), nans(len(dk)), nans(len(dv))
				c.attentionBackward(gdq, gdk, gdv, Buffer{}, h.out(2*P), h.up(dout), gprobs, gq, gk, gv, keys, s, [3]bool{true, true, true})
				h.expect("attentionBackward setting dq", gdq, dq, tolProduct)
				h.expect("attentionBackward setting dk", gdk, dk, tolProduct)
				h.expect("attentionBackward setting dv", gdv, dv, tolProduct)
			})
		}
	})

	t.Run("position bias", func(t *testing.T) {
		h.t = t
		NB, H, Tq, Tk := 8, 3, 4, 6
		table := h.rand(NB * H)
		buckets := make([]int32, Tq*Tk)
		for i := 0; i < Tq; i++ {
			for j := 0; j < Tk; j++ {
				buckets[i*Tk+j] = int32(RelativeBucket(j-i, true, NB, 16))
			}
		}
		want := make([]float32, H*Tq*Tk)
		PositionBiasForward(want, table, buckets, H, Tq, Tk)
		gb := c.UploadInt32(buckets)
		out := h.out(len(want))
		c.PositionBiasForward(out, h.up(table), gb, H)
		h.expect("PositionBiasForward", out, want, 0)
		dtable, dout := h.rand(NB*H), h.rand(H*Tq*Tk)
		gdt := h.up(dtable)
		PositionBiasBackward(dtable, dout, buckets, H, Tq, Tk)
		c.PositionBiasBackward(gdt, h.up(dout), gb, NB, H)
		h.expect("PositionBiasBackward", gdt, dtable, tolReduction)
	})

	t.Run("pointwise", func(t *testing.T) {
		h.t = t
		n := 1000
		x := h.rand(n)
		x[7] = float32(math.NaN()) // passed on, as PyTorch's activations pass it
		for _, op := range []struct {
			name   string
			cf     func(out, x []float32)
			cb     func(dx, dout, saved []float32)
			gf     func(out, x Buffer)
			gb     func(dx, dout, saved Buffer)
			useOut bool
		}{
			{"relu", ReLUForward, ReLUBackward, c.ReLUForward, c.ReLUBackward, false},
			{"gelu", GeluNewForward, GeluNewBackward, c.GeluNewForward, c.GeluNewBackward, false},
			{"sigmoid", SigmoidForward, SigmoidBackward, c.SigmoidForward, c.SigmoidBackward, true},
			{"tanh", TanhForward, TanhBackward, c.TanhForward, c.TanhBackward, true},
		} {
			want := make([]float32, n)
			op.cf(want, x)
			gx, out := h.up(x), h.out(n)
			op.gf(out, gx)
			h.expect(op.name+" forward", out, want, tolPointwise)
			dout, dx := h.rand(n), h.rand(n)
			gdx := h.up(dx)
			saved, gsaved := x, gx
			if op.useOut {
				saved, gsaved = want, out
			}
			op.cb(dx, dout, saved)
			op.gb(gdx, h.up(dout), gsaved)
			h.expect(op.name+" backward", gdx, dx, tolPointwise)
		}

		a, b, row := h.rand(n), h.rand(n), h.rand(40)
		want := make([]float32, n)
		for i := range want {
			want[i] = a[i] + row[i%40]
		}
		out := h.out(n)
		c.Add(out, h.up(a), h.up(row))
		h.expect("Add broadcast", out, want, tolPointwise)
		for i := range want {
			want[i] = a[i] * b[i]
		}
		ga, gb := h.up(a), h.up(b)
		c.Mul(out, ga, gb)
		h.expect("Mul", out, want, tolPointwise)
		dout, da, db := h.rand(n), h.rand(n), h.rand(n)
		gda, gdb := h.up(da), h.up(db)
		c.MulBackward(gda, gdb, h.up(dout), ga, gb)
		for i := range da {
			da[i] += dout[i] * b[i]
			db[i] += dout[i] * a[i]
		}
		h.expect("MulBackward da", gda, da, tolPointwise)
		h.expect("MulBackward db", gdb, db, tolPointwise)
		c.Scale(out, ga, 0.5)
		for i := range want {
			want[i] = 0.5 * a[i]
		}
		h.expect("Scale", out, want, tolPointwise)
		sums := h.rand(40)
		gs := h.up(sums)
		c.AccumulateRows(gs, ga, n/40, 40)
		for i, v := range a {
			sums[i%40] += v
		}
		h.expect("AccumulateRows", gs, sums, tolReduction)
		few := h.rand(4) // 250 rows: the two-pass sum
		gf := h.up(few)
		c.AccumulateRows(gf, ga, n/4, 4)
		for i, v := range a {
			few[i%4] += v
		}
		h.expect("AccumulateRows, 250 rows", gf, few, tolReduction)
	})

	t.Run("dropout", func(t *testing.T) {
		h.t = t
		n, p := 8000, float32(0.1)
		m1, m2, m3 := h.out(n), h.out(n), h.out(n)
		c.DropoutMask(m1, DropoutKeys{Seed: 42, Stream: 1, P: p})
		c.DropoutMask(m2, DropoutKeys{Seed: 42, Stream: 1, P: p})
		c.DropoutMask(m3, DropoutKeys{Seed: 42, Stream: 2, P: p})
		a, b, d := make([]float32, n), make([]float32, n), make([]float32, n)
		for _, x := range []struct {
			dst []float32
			buf Buffer
		}{{a, m1}, {b, m2}, {d, m3}} {
			if err := c.Download(x.dst, x.buf); err != nil {
				t.Fatal(err)
			}
		}
		zeros, same := 0, 0
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("same keys, different masks at %d", i)
			}
			if a[i] == 0 {
				zeros++
			} else if a[i] != 1/(1-p) {
				t.Fatalf("mask value %v", a[i])
			}
			if a[i] == d[i] {
				same++
			}
		}
		// Binomial(8000, 0.1): sd 26.8; 5 sd either side.
		if zeros < 666 || zeros > 934 {
			t.Errorf("%d of %d dropped, want about %d", zeros, n, int(float32(n)*p))
		}
		if same > n*9/10 {
			t.Errorf("another stream agrees on %d of %d", same, n)
		}

		// DropoutApply multiplies by that mask, drawn again, and adds
		// when accumulating, as a backward does.
		x, acc := h.rand(n), h.rand(n)
		gx, gout, gacc := h.up(x), h.out(n), h.up(acc)
		keys := DropoutKeys{Seed: 42, Stream: 1, P: p}
		c.DropoutApply(gout, gx, keys, false)
		c.DropoutApply(gacc, gx, keys, true)
		want, wantAcc := make([]float32, n), make([]float32, n)
		for i := range x {
			want[i] = x[i] * a[i]
			wantAcc[i] = acc[i] + x[i]*a[i]
		}
		h.expect("DropoutApply", gout, want, 0)
		h.expect("DropoutApply, accumulating", gacc, wantAcc, 1e-7)
	})

	t.Run("cross entropy", func(t *testing.T) {
		h.t = t
		N, V := 6, 300
		logits := h.rand(N * V)
		targets := []int32{4, -100, 299, 0, 17, 4}
		probs := make([]float32, N*V)
		loss, count := CrossEntropyForward(probs, logits, targets, N, V, -100)
		gt := c.UploadInt32(targets)
		gp, gl := h.out(N*V), h.out(1)
		dl := h.rand(N * V)
		glogits, gdl, gdloss := h.up(logits), h.up(dl), h.up([]float32{0.7})
		before := c.Calls()
		gcount := c.CrossEntropyForward(gl, gp, glogits, gt, targets, N, V, -100)
		c.CrossEntropyBackward(gdl, gp, gt, gdloss, N, V, -100, gcount)
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		if s := c.Calls().Syncs - before.Syncs; s != 1 {
			t.Errorf("the loss and its gradient waited for the stream %d times, want none (1 with the test's Sync)", s)
		}
		gloss := make([]float32, 1)
		if err := c.Download(gloss, gl); err != nil {
			t.Fatal(err)
		}
		if gcount != count || gloss[0] != float32(loss) && math.Abs(float64(gloss[0])-loss) > 1e-6*math.Abs(loss) {
			t.Errorf("loss %v over %d, want %v over %d", gloss[0], gcount, loss, count)
		}
		h.expect("CrossEntropyForward probs", gp, probs, tolReduction)
		CrossEntropyBackward(dl, probs, targets, N, V, -100, 0.7, count)
		h.expect("CrossEntropyBackward", gdl, dl, tolReduction)
	})

	t.Run("gru", func(t *testing.T) {
		h.t = t
		N, R := 3, 7
		gi, gh, hp := h.rand(N*3*R), h.rand(N*3*R), h.rand(N*R)
		want, gates := make([]float32, N*R), make([]float32, N*3*R)
		GRUGateForward(want, gates, gi, gh, hp, N, R)
		out, ggates := h.out(N*R), h.out(N*3*R)
		ggh, ghp := h.up(gh), h.up(hp)
		c.GRUGateForward(out, ggates, h.up(gi), ggh, ghp, N, R)
		h.expect("GRUGateForward", out, want, tolPointwise)
		h.expect("GRUGateForward gates", ggates, gates, tolPointwise)
		dout, dgi, dgh, dh := h.rand(N*R), h.rand(N*3*R), h.rand(N*3*R), h.rand(N*R)
		gdgi, gdgh, gdh := h.up(dgi), h.up(dgh), h.up(dh)
		GRUGateBackward(dgi, dgh, dh, dout, gates, gh, hp, N, R)
		c.GRUGateBackward(gdgi, gdgh, gdh, h.up(dout), ggates, ggh, ghp, N, R)
		h.expect("GRUGateBackward dgi", gdgi, dgi, tolPointwise)
		h.expect("GRUGateBackward dgh", gdgh, dgh, tolPointwise)
		h.expect("GRUGateBackward dh", gdh, dh, tolPointwise)
	})

	t.Run("lstm", func(t *testing.T) {
		h.t = t
		N, R := 3, 7
		g, cp := h.rand(N*4*R), h.rand(N*R)
		hOut, cOut, acts, tc := make([]float32, N*R), make([]float32, N*R), make([]float32, N*4*R), make([]float32, N*R)
		LSTMGateForward(hOut, cOut, acts, tc, g, cp, N, R)
		gh, gc, gacts, gtc := h.out(N*R), h.out(N*R), h.out(N*4*R), h.out(N*R)
		gcp := h.up(cp)
		c.LSTMGateForward(gh, gc, gacts, gtc, h.up(g), gcp, N, R)
		h.expect("LSTMGateForward h", gh, hOut, tolPointwise)
		h.expect("LSTMGateForward c", gc, cOut, tolPointwise)
		dhOut, dcOut, dg, dc := h.rand(N*R), h.rand(N*R), h.rand(N*4*R), h.rand(N*R)
		gdg, gdc := h.up(dg), h.up(dc)
		LSTMGateBackward(dg, dc, dhOut, dcOut, acts, tc, cp, N, R)
		c.LSTMGateBackward(gdg, gdc, h.up(dhOut), h.up(dcOut), gacts, gtc, gcp, N, R)
		h.expect("LSTMGateBackward dg", gdg, dg, tolPointwise)
		h.expect("LSTMGateBackward dc", gdc, dc, tolPointwise)
	})

	t.Run("adamw", func(t *testing.T) {
		// Tensors of a chunk, part of one, several (a remainder included)
		// and none: one launch per whole-model op, whatever the sizes.
		h.t = t
		sizes := []int{500, 1, 2*chunkElems + 7, 0, chunkElems}
		var host []*Tensor
		var gp, gg, gm, gv []Buffer
		for _, n := range sizes {
			p, g := h.rand(n), h.rand(n)
			host = append(host, &Tensor{Shape: []int{n}, Data: p, Grad: g})
			gp, gg = append(gp, h.up(p)), append(gg, h.up(g))
			gm, gv = append(gm, h.up(make([]float32, n))), append(gv, h.up(make([]float32, n)))
		}
		o := NewAdamW(1e-3)
		for step := 1; step <= 3; step++ {
			o.Step(host)
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
			before := c.Calls().Kernels
			c.AdamWStep(o, step, gp, gg, gm, gv)
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
			if k := c.Calls().Kernels - before; k != 1 {
				t.Errorf("AdamWStep over %d tensors launched %d kernels, want 1", len(sizes), k)
			}
		}
		for i, x := range host {
			if x.Len() > 0 {
				h.expect(fmt.Sprintf("AdamWStep tensor %d (%d values)", i, x.Len()), gp[i], x.Data, tolPointwise)
			}
		}
		ss, err := c.SumSquares(gg)
		if err != nil {
			t.Fatal(err)
		}
		var want float64
		for _, x := range host {
			for _, v := range x.Grad {
				want += float64(v) * float64(v)
			}
		}
		if math.Abs(ss-want) > 1e-9*want {
			t.Errorf("SumSquares = %v, want %v", ss, want)
		}
		c.ScaleAll(gg, 0.25)
		for i, x := range host {
			if x.Len() > 0 {
				want := clone(x.Grad)
				for j := range want {
					want[j] *= 0.25
				}
				h.expect(fmt.Sprintf("ScaleAll tensor %d", i), gg[i], want, 0)
			}
		}
	})
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
}

// checkCUDASgemm holds the Backend product over host slices to gonum's,
// for every transpose pair, padded leading dimensions and beta ≠ 0.
func checkCUDASgemm(t *testing.T, c *CUDA) {
	rng := rand.New(rand.NewPCG(3, 4))
	randv := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			for _, k := range []int{0, 5} {
				m, n, pad := 4, 6, 3
				ar, ac := m, k
				if ta {
					ar, ac = k, m
				}
				br, bc := k, n
				if tb {
					br, bc = n, k
				}
				lda, ldb, ldc := ac+pad, bc+pad, n+pad
				a, b := randv(max(ar*lda, 1)), randv(max(br*ldb, 1))
				want := randv(m * ldc)
				got := clone(want)
				Gonum{}.Sgemm(ta, tb, m, n, k, 1.5, a, lda, b, ldb, 0.5, want, ldc)
				c.Sgemm(ta, tb, m, n, k, 1.5, a, lda, b, ldb, 0.5, got, ldc)
				for i := range want {
					if math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("Sgemm(transA %v, transB %v, k %d)[%d] = %v, want %v", ta, tb, k, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestGraphOnEmulatedGPU runs every op case as a GPU graph (tensors in
// device memory, the tape over device kernels) against the CPU graph.
func TestGraphOnEmulatedGPU(t *testing.T) {
	c := openEmulated(t)
	for i, oc := range opCases() {
		t.Run(oc.name, func(t *testing.T) {
			oc.run(t, c, rand.New(rand.NewPCG(uint64(i), 1)))
		})
	}
}

// TestCUDACallsCount: every kernel launch and cuBLAS call is counted,
// what `sweep bench t5 --backend cuda` reports per step.
func TestCUDACallsCount(t *testing.T) {
	c := openEmulated(t)
	before := c.Calls()
	x := &Tensor{Shape: []int{4, 8}, Data: make([]float32, 32)}
	w := &Tensor{Shape: []int{6, 8}, Data: make([]float32, 48)}
	ToDevice(c, x, w)
	g := NewGraph(c)
	defer g.Release()
	y := g.ReLU(g.Linear(x, w, nil)) // one product, one kernel at least
	y.Values()
	after := c.Calls()
	if after.BLAS-before.BLAS != 1 || after.Kernels-before.Kernels < 1 {
		t.Fatalf("calls %+v → %+v: want one cuBLAS call and a kernel launch", before, after)
	}
}

// TestPeakBytesCountsLiveBlocks: the peak is of memory in use, as
// torch.cuda.max_memory_allocated's: a freed block, kept in the cache and
// handed out again, is not counted twice.
func TestPeakBytesCountsLiveBlocks(t *testing.T) {
	c := openEmulated(t)
	start := c.PeakBytes()
	const n = 1 << 20 // 4 MiB, its own size class
	a := c.Alloc(n)
	c.Free(a)
	b := c.Alloc(n)
	if got := c.PeakBytes() - start; got != 4*n {
		t.Errorf("one live block at a time: peak grew %d bytes, want %d", got, 4*n)
	}
	d := c.Alloc(n)
	if got := c.PeakBytes() - start; got != 8*n {
		t.Errorf("two live blocks: peak grew %d bytes, want %d", got, 8*n)
	}
	c.Free(b, d)
}

// TestSizeClass: a block wastes less than an eighth of itself (or 256
// bytes), classes grow with the request, and T5's tensors fill theirs.
func TestSizeClass(t *testing.T) {
	prev := 0
	for bytes := 1; bytes <= 64<<20; bytes += 1 + bytes/97 {
		c := sizeClass(bytes)
		if c < bytes || c-bytes >= max(256, bytes/8+1) || c < prev {
			t.Fatalf("sizeClass(%d) = %d (previous class %d): want at least the request, under an eighth more, never less than a smaller request's", bytes, c, prev)
		}
		if bytes > 16<<20 && c%(2<<20) != 0 {
			t.Fatalf("sizeClass(%d) = %d: large blocks come in 2 MiB steps", bytes, c)
		}
		prev = c
	}
	for _, floats := range []int{768 * 768, 768 * 3072, 8 * 128 * 768, 8 * 12 * 128 * 128, 512 * 2048} {
		if c := sizeClass(4 * floats); c != 4*floats {
			t.Errorf("%d floats (%d bytes) take a %d-byte block", floats, 4*floats, c)
		}
	}
}

// TestPeakBytesCountsTheBlock: a t5-base weight is counted at its size,
// not at a power of two.
func TestPeakBytesCountsTheBlock(t *testing.T) {
	c := openEmulated(t)
	start := c.PeakBytes()
	const n = 768 * 768
	b := c.Alloc(n)
	defer c.Free(b)
	if got := c.PeakBytes() - start; got != 4*n {
		t.Errorf("a 768 × 768 block: peak grew %d bytes, want %d", got, 4*n)
	}
}

// TestViewOnDeviceIsItsBase: a view made of a host tensor before the
// tensor went to the GPU carries the gradient into the tensor itself, as
// on the CPU; it once went to the device as a copy of its own, and the
// tensor's gradient stayed zero without a word.
func TestViewOnDeviceIsItsBase(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(3, 3))
	x := randTensor(rng, false, 2, 4)
	w := randTensor(rng, true, 12)
	checkOnDevice(t, c, []*Tensor{w}, 1e-2, func(g *Graph) *Tensor { return g.Linear(x, w.View(3, 4), nil) })
	if !w.OnDevice() {
		t.Error("the view went to the GPU without its base")
	}
	// A view of a view shares the first base too.
	v := randTensor(rng, true, 12)
	checkOnDevice(t, c, []*Tensor{v}, 1e-2, func(g *Graph) *Tensor { return g.Linear(x, v.View(2, 6).View(3, 4), nil) })

	// A view made before its base went to the GPU reads and writes the
	// base's device values, not its stale host copy.
	u := randTensor(rng, true, 12)
	early := u.View(3, 4)
	ToDevice(c, u)
	sevens := make([]float32, 12)
	for i := range sevens {
		sevens[i] = 7
	}
	early.SetValues(sevens)
	if !early.OnDevice() || !slices.Equal(u.Values(), sevens) {
		t.Errorf("a view set before its base was mirrored: on device %v, base %v", early.OnDevice(), u.Values())
	}
}

// TestUploadsDoNotWait: uploads queue their copies without waiting for the
// stream, each from its own bytes of the staging buffer, so a later upload
// cannot overwrite one the stream has not copied yet; only a full buffer
// waits. The values must arrive intact either way.
func TestUploadsDoNotWait(t *testing.T) {
	c := openEmulated(t)
	vals := func(n int, seed float32) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = seed + float32(i)
		}
		return x
	}
	check := func(b Buffer, want []float32) {
		t.Helper()
		got := make([]float32, len(want))
		if err := c.Download(got, b); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("buffer of %d: got %v…, want %v…", len(want), got[:3], want[:3])
		}
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	before := c.Calls()
	small := [][]float32{vals(7, 1), vals(64, 100), vals(1000, 1e4)}
	var bufs []Buffer
	for _, x := range small {
		bufs = append(bufs, c.Upload(x))
		x[0] = -1 // the caller's slice is free again at once
	}
	ids := c.UploadInt32([]int32{3, 1, 4, 1, 5})
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if s := c.Calls().Syncs - before.Syncs; s != 1 {
		t.Errorf("four uploads and a Sync waited %d times, want 1 (the Sync)", s)
	}
	for i, b := range bufs {
		want := vals(len(small[i]), small[i][1]-1)
		check(b, want)
	}
	gotIDs := make([]float32, 5)
	if err := c.Download(gotIDs, ids); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int32{3, 1, 4, 1, 5} {
		if int32(math.Float32bits(gotIDs[i])) != want {
			t.Errorf("id %d: %d, want %d", i, int32(math.Float32bits(gotIDs[i])), want)
		}
	}

	// More than the buffer holds, and one upload larger than it: the
	// stream must have copied the earlier bytes before they are reused.
	before = c.Calls()
	big := [][]float32{vals(200_000, 1), vals(200_000, 2), vals(200_000, 3), vals(700_000, 4)}
	bufs = bufs[:0]
	for _, x := range big {
		bufs = append(bufs, c.Upload(x))
	}
	for i, b := range bufs {
		check(b, vals(len(big[i]), float32(i+1)))
	}
	// A wait each for the copies back, and at most one per upload after
	// the first.
	if s := c.Calls().Syncs - before.Syncs; s > int64(2*len(big)-1) {
		t.Errorf("%d waits for %d uploads past the buffer's size and %d copies back", s, len(big), len(big))
	}
}

// TestZerosOnGPUAreZero: new GPU tensors are not cleared (an op writes
// them whole), but Zeros, READ's initial state, must be: with poison on,
// a Zeros left uncleared would hold NaN.
func TestZerosOnGPUAreZero(t *testing.T) {
	c := openEmulated(t)
	g := NewGraph(c)
	defer g.Release()
	g.poison, g.gpu.(*cudaGraph).arena.poison = true, true
	z := g.Zeros(3, 5)
	for i, v := range z.Values() {
		if v != 0 {
			t.Fatalf("Zeros[%d] = %v", i, v)
		}
	}
	if v := g.New(false, 2).Values(); !math.IsNaN(float64(v[0])) {
		t.Errorf("a new output holds %v under poison, want NaN: the check above proves nothing", v[0])
	}
}
