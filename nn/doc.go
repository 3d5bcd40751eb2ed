// Package nn is the numeric core: float32 tensors, hand-written kernels with
// their backward passes, a reverse-mode tape that orders them, and the AdamW
// optimiser. It is written in the spirit of llm.c: each layer is a pair of
// plain functions (forward, backward) over flat slices with their sizes,
// and the tape only records which backward to run.
//
// # Dimension letters
//
// B batch, S source length, T target length, D d_model, H heads, K d_kv,
// F d_ff, V vocab, R recurrent hidden size, N rows (B·S or B·T).
//
// # Invariants
//
// Kernels write their outputs (the first arguments) and never modify
// inputs. Backward kernels add (+=) into every gradient they touch, so a
// tensor used twice accumulates both contributions; doc comments say so.
// Activations and their gradients live in a Graph's arena and are valid
// until Graph.Reset; parameters and their gradients live in arenas of
// their own (see Params). A Tensor whose Grad is nil takes no gradient:
// ops whose inputs all lack gradients record nothing on the tape and keep
// no activation for backward, which is how a frozen backbone runs
// tape-free.
//
// A View shares its tensor's data and gradient on the host and on the
// GPU alike: whichever of the two reaches the GPU first takes the other
// with it (a view is mirrored as its base), so a gradient that flows into
// a view is the base's gradient.
//
// # Backends
//
// Matrix products go through a Backend: OpenBLAS, opened at run time with
// dlopen (no headers or -lopenblas at build time; LoadOpenBLAS says which
// names it tries and $READSWEEP_OPENBLAS overrides them), or gonum's
// pure-Go BLAS where none opens or the build has no cgo. Elementwise
// kernels are Go loops split over GOMAXPROCS goroutines.
//
// OpenBLAS 0.3.21 does not recognise some recent CPUs and then runs generic
// kernels; OPENBLAS_CORETYPE=SkylakeX (set before the process starts) makes
// it several times faster there. This package never sets that variable.
package nn
