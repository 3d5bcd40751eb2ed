//go:build !cgo || !linux

package t5

import (
	"testing"

	"github.com/readsweep/readsweep/nn"
)

// emulatedGPU: the emulator is loaded with dlopen, which needs cgo.
func emulatedGPU(*testing.T) nn.Backend { return nil }
