package dashboard

import (
	"os"
	"strings"
	"testing"
)

// TestAllowedHosts: the names a request may carry are the loopback names,
// the host --addr names (as typed, and as listened on), and, listening on
// every interface, the printed address itself and this machine's name.
func TestAllowedHosts(t *testing.T) {
	name, _ := os.Hostname()
	for _, tc := range []struct {
		addrs      []string
		want, nots []string
	}{
		{[]string{"127.0.0.1:0", "127.0.0.1:4321"}, []string{"localhost", "127.0.0.1", "::1"}, []string{"0.0.0.0", "evil.example", strings.ToLower(name)}},
		{[]string{"myhost:0", "127.0.0.1:4321"}, []string{"myhost", "localhost"}, []string{"evil.example"}},
		{[]string{"0.0.0.0:0", "[::]:4321"}, []string{"0.0.0.0", "::", strings.ToLower(name), "localhost"}, []string{"evil.example"}},
	} {
		hosts := allowedHosts([]string{"Proxy.Example:443"}, tc.addrs...)
		for _, h := range append(tc.want, "proxy.example") {
			if !hosts[hostOf(h)] {
				t.Errorf("listening on %v: %q refused", tc.addrs, h)
			}
		}
		for _, h := range tc.nots {
			if hosts[hostOf(h)] {
				t.Errorf("listening on %v: %q admitted", tc.addrs, h)
			}
		}
	}
}
