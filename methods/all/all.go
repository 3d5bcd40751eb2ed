// Package all is the registry of every method this tool trains: the one
// list the sweep file's parser, the trainer, the tables and the dashboard
// read. It lives apart from package methods, which the methods themselves
// import.
package all

import (
	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/read"
)

// Synthetic is the synthetic trainer's test double: a method name the
// orchestrator accepts, which no model is built for.
const Synthetic = "synthetic"

// Registry returns a new registry of every method.
func Registry() methods.Registry {
	r := methods.Registry{}
	baselines.Register(r)
	read.Register(r)
	r[Synthetic] = methods.Entry{Display: "synthetic (test double)", Order: 100}
	return r
}
