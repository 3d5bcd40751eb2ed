package storage

import (
	"regexp"
	"strings"
)

var (
	// secretParam is a password parameter of a URL's query or fragment,
	// or of a libpq key=value string; its value ends at &, #, a space
	// or a quote, or is quoted.
	secretParam = regexp.MustCompile(`(?i)\b(password|sslpassword)(\s*=\s*)('[^']*'|[^&#\s'"]*)`)
	// schemePrefix is a URL's scheme and the slashes after it, written
	// right or not (postgresql:/, postgresql:).
	schemePrefix = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:/*`)
	// atToken is a run of text with an @ in it, inside an error message.
	atToken = regexp.MustCompile("[^\\s`'\"]*@[^\\s`'\"]*")
)

// Redact returns a storage URL fit to print: the password of its user
// information and the values of its password and sslpassword parameters
// become ***. Every place that shows a storage URL (logs, errors, job
// scripts, the dashboard) goes through it.
//
// It works on the text, not on a parsed URL: a password may hold an
// unescaped / ? # or @, which a URL parser reads as the end of the user
// information (postgresql://u:12/x@host reads as host u, port 12), and a
// mistyped URL must not show its password either. The user information
// runs from after the scheme to the last @, and its password from its
// first ':'.
func Redact(raw string) string {
	s := raw
	if at := strings.LastIndex(s, "@"); at >= 0 {
		start := 0
		if m := schemePrefix.FindStringIndex(s); m != nil && m[1] <= at {
			start = m[1]
		}
		if c := strings.Index(s[start:at], ":"); c >= 0 {
			s = s[:start+c+1] + "***" + s[at:]
		}
	}
	return secretParam.ReplaceAllString(s, "${1}${2}***")
}

// RedactText masks storage secrets inside a message that quotes a URL,
// such as a driver's error.
func RedactText(msg string) string {
	return secretParam.ReplaceAllString(atToken.ReplaceAllStringFunc(msg, Redact), "${1}${2}***")
}

// redacted is an error whose text has its storage secrets masked; errors.Is
// and errors.As still reach the driver's error beneath.
type redacted struct{ err error }

func (e redacted) Error() string { return RedactText(e.err.Error()) }
func (e redacted) Unwrap() error { return e.err }

// redactedError masks the storage secrets in err's text, a driver's error
// that may quote the URL it was given.
func redactedError(err error) error { return redacted{err} }
