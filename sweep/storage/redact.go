package storage

import (
	"net/url"
	"regexp"
	"strings"
)

// secretParams are the connection parameters that carry a secret, in a
// URL's query or a libpq key=value string.
var secretParams = []string{"password", "sslpassword"}

var secretKeyValue = regexp.MustCompile(`(?i)\b(password|sslpassword)\s*=\s*('[^']*'|\S+)`)

// Redact returns a storage URL fit to print: the password of its user
// information and the values of its password and sslpassword parameters
// become ***. Every place that shows a storage URL (logs, errors, job
// scripts, the dashboard) goes through it.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		// Not a URL (a libpq key=value string, or a malformed URL):
		// mask what looks like a secret, and any user information.
		s := secretKeyValue.ReplaceAllString(raw, "$1=***")
		if i := strings.Index(s, "://"); i >= 0 {
			if at := strings.LastIndex(s, "@"); at > i {
				if c := strings.Index(s[i+3:at], ":"); c >= 0 {
					s = s[:i+3+c+1] + "***" + s[at:]
				}
			}
		}
		return s
	}
	var b strings.Builder
	b.WriteString(u.Scheme + ":")
	if u.Opaque != "" {
		b.WriteString(u.Opaque)
	} else {
		if u.Host != "" || u.User != nil || strings.HasPrefix(raw, u.Scheme+"://") {
			b.WriteString("//")
		}
		if u.User != nil {
			b.WriteString(url.PathEscape(u.User.Username()))
			if _, has := u.User.Password(); has {
				b.WriteString(":***") // written by hand: url.String escapes it as %2A%2A%2A
			}
			b.WriteString("@")
		}
		b.WriteString(u.Host)
		b.WriteString(u.EscapedPath())
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			key, _, _ := strings.Cut(p, "=")
			if k, err := url.QueryUnescape(key); err == nil {
				for _, secret := range secretParams {
					if strings.EqualFold(k, secret) {
						parts[i] = key + "=***"
					}
				}
			}
		}
		b.WriteString("?" + strings.Join(parts, "&"))
	}
	if u.Fragment != "" {
		b.WriteString("#" + u.EscapedFragment())
	}
	return b.String()
}
