//go:build !unix

package storage

// writable cannot be asked here without writing: take the path as
// writable, as SQLite itself will find out otherwise.
func writable(string) bool { return true }
