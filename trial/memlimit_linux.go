package trial

import "syscall"

// dataLimit is the process's RLIMIT_DATA in bytes (trial_memory_gb sets
// it), 0 when there is none.
func dataLimit() uint64 {
	const unlimited = ^uint64(0) // RLIM_INFINITY
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_DATA, &r) != nil || r.Cur == unlimited {
		return 0
	}
	return r.Cur
}
