package storage

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgresql://u:secret@db.example:5432/sweeps", "postgresql://u:***@db.example:5432/sweeps"},
		{"postgresql://u@db/sweeps?password=secret&sslmode=require", "postgresql://u@db/sweeps?password=***&sslmode=require"},
		{"postgres://u:secret@db/s?sslpassword=secret2&timezone=UTC", "postgres://u:***@db/s?sslpassword=***&timezone=UTC"},
		{"postgresql://u:p%40ss@db/s?PassWord=secret", "postgresql://u:***@db/s?PassWord=***"},
		{"postgresql:///sweeps?host=/run/postgresql&password=secret", "postgresql:///sweeps?host=/run/postgresql&password=***"},
		{"host=db user=u password=secret dbname=s", "host=db user=u password=*** dbname=s"},
		{"host=db password='se cret' dbname=s", "host=db password=*** dbname=s"},
		{"sqlite:///sweeps.db", "sqlite:///sweeps.db"},
		{"sqlite:////abs/path/s.db", "sqlite:////abs/path/s.db"},
		{"postgresql://u:sec ret@db/s", "postgresql://u:***@db/s"},
	} {
		got := Redact(tc.in)
		if got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "secret") || strings.Contains(got, "sec ret") || strings.Contains(got, "p%40ss") {
			t.Errorf("Redact(%q) = %q shows the secret", tc.in, got)
		}
	}
}
