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
		{"postgresql://alice:1234/secret@127.0.0.1:1/db", "postgresql://alice:***@127.0.0.1:1/db"},
		{"postgresql://alice:1234?secret@127.0.0.1:1/db", "postgresql://alice:***@127.0.0.1:1/db"},
		{"postgresql://alice:12#secret@127.0.0.1:1/db", "postgresql://alice:***@127.0.0.1:1/db"},
		{"postgresql://alice:se@cret@127.0.0.1:1/db", "postgresql://alice:***@127.0.0.1:1/db"},
		{"postgresql:/alice:secret@127.0.0.1:1/db", "postgresql:/alice:***@127.0.0.1:1/db"},
		{"postgresql:alice:secret@127.0.0.1:1/db", "postgresql:alice:***@127.0.0.1:1/db"},
		{"sqlite://alice:secret@127.0.0.1:1/db", "sqlite://alice:***@127.0.0.1:1/db"},
		{"postgresql://u@db/s#password=secret", "postgresql://u@db/s#password=***"},
		{"postgresql://u@db/s?password=sec;ret", "postgresql://u@db/s?password=***"},
		{"postgresql://u@[::1]:5432/s", "postgresql://u@[::1]:5432/s"},
		{"host=db user=u password=se@cret dbname=s", "host=db user=u password=*** dbname=s"},
	} {
		got := Redact(tc.in)
		if got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "secret") || strings.Contains(got, "sec ret") || strings.Contains(got, "p%40ss") || strings.Contains(got, "cret") {
			t.Errorf("Redact(%q) = %q shows the secret", tc.in, got)
		}
	}
}

func TestRedactText(t *testing.T) {
	msg := "failed to connect to `postgresql://alice:12/secret@127.0.0.1:1/db?sslpassword=secret2`: cannot parse `host=x password=secret3`: dial error"
	got := RedactText(msg)
	for _, secret := range []string{"secret", "12/"} {
		if strings.Contains(got, secret) {
			t.Errorf("RedactText shows %q: %s", secret, got)
		}
	}
	if !strings.Contains(got, "dial error") || !strings.Contains(got, "127.0.0.1:1/db") {
		t.Errorf("RedactText lost the message: %s", got)
	}
}
