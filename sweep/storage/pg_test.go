package storage

import (
	"os"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage/pgtest"
)

func freshPostgres(t *testing.T) string { return pgtest.Fresh(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}
