//go:build !linux

package trial

// dataLimit: trial_memory_gb is set on Linux only.
func dataLimit() uint64 { return 0 }
