// Sweep runs learning-rate sweeps of fine-tuning methods (READ and its
// baselines) on GLUE, searching with TPE and storing every study in an
// SQLite file in Optuna's schema.
//
// Usage:
//
//	sweep run SWEEPS.yaml [--parallel N] [--only method=read,dataset=sst2] [--dry-run]
//	sweep worker SWEEPS.yaml [--storage postgresql://...]   one more worker on a shared database
//	sweep submit --slurm SWEEPS.yaml [--workers N] [--gres gpu:1]   a Slurm job array of workers
//	sweep status [--job ID]                         per-study progress beside the Slurm job's states
//	sweep best --method M [--dataset D[,D...]]     Appendix D.2 architecture choice
//	sweep final SWEEPS.yaml                         final runs: chosen arch and lr × every seed
//	sweep table [--format md|csv|latex|json] [--with-paper]   Tables 1 and 3 from the final runs
//	sweep plot [--out results/output/figures]              Figure 1 and per-study plots (PNG, SVG)
//	sweep studies                                   one line per study
//	sweep trials STUDY [--state complete|pruned|fail|running|waiting]
//	sweep show STUDY#N                              one trial in full
//	sweep retry [STUDY]                             re-enqueue failed trials
//	sweep export [--format csv|json] [--out FILE]   every trial
//	sweep ask --study-name NAME --search-space JSON [--direction D] [--sampler tpe|random] [--sampler-kwargs JSON]
//	sweep tell --study-name NAME --trial-number N (--values V | --state fail|pruned)
//	sweep fetch glue [--dir data/glue] [--tasks cola,...]   GLUE from the hub (HF_ENDPOINT, HF_TOKEN)
//	sweep fetch model t5-base [--dir DIR]           a T5 checkpoint and tokenizer from the hub
//	sweep model new --out DIR --spiece FILE          a random small T5 (examples, tests)
//	sweep data stats [--dir data/glue] [--seed 42]  split sizes after the paper's protocol
//	sweep bench tpe [--seeds 30] [--trials 32]      sampler quality and speed
//	sweep bench t5 [--size t5-small] [--peer torch_cpu_peer.py]   training-step speed and memory
//
// Commands that read a database take --storage URL (default $SWEEP_STORAGE,
// else sqlite:///sweeps.db) or --config SWEEPS.yaml to use that file's
// storage. `sweep trial` is the hidden entry the orchestrator spawns for each
// trial; it reads a spec on stdin (see docs/protocol.md).
//
// Exit status: 0 on success, 1 on failure, 2 on misuse.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
)

func main() {
	log.SetPrefix("sweep: ")
	log.SetFlags(0)
	os.Exit(run(os.Args[1:]))
}

var errUsage = errors.New("usage")

type command struct {
	name, summary string
	run           func(args []string) error
	hidden        bool
}

func commands() []command {
	return []command{
		{"run", "run a sweep file until every study has its trials", cmdRun, false},
		{"worker", "run trials of a sweep in a shared database (any machine); exits when all budgets are met", cmdWorker, false},
		{"submit", "submit a Slurm job array of workers: submit --slurm SWEEPS.yaml", cmdSubmit, false},
		{"status", "per-study progress, and a Slurm job's workers with --job", cmdStatus, false},
		{"best", "choose a method's architecture (Appendix D.2) and show its best trials", cmdBest, false},
		{"final", "re-run each method's chosen architecture and lr with every seed (final/ studies)", cmdFinal, false},
		{"table", "Table 1 and Table 3 from the final runs (md, csv, latex, json)", cmdTable, false},
		{"plot", "Figure 1 and per-study plots as PNG and SVG", cmdPlot, false},
		{"studies", "list studies", cmdStudies, false},
		{"trials", "list a study's trials", cmdTrials, false},
		{"show", "show one trial (STUDY#N)", cmdShow, false},
		{"retry", "re-enqueue failed trials", cmdRetry, false},
		{"export", "export every trial as csv or json; export STUDY#N --out DIR: its saved model", cmdExport, false},
		{"predict", "run a saved or exported model on a file of examples: predict --model DIR --input FILE", cmdPredict, false},
		{"dashboard", "serve a read-only web dashboard of the studies (live while sweeps run)", cmdDashboard, false},
		{"ask", "create a trial and print its parameters (like optuna ask)", cmdAsk, false},
		{"tell", "finish a trial (like optuna tell)", cmdTell, false},
		{"fetch", "download data and models: fetch glue, fetch model NAME", cmdFetch, false},
		{"data", "data reports: data stats", cmdData, false},
		{"model", "make models: model new (a random small T5 for examples and tests)", cmdModel, false},
		{"bench", "benchmarks: bench tpe, bench t5, bench read, bench dashboard", cmdBench, false},
		{"trial", "run one trial from a spec on stdin (spawned by run)", cmdTrial, true},
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sweep COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(os.Stderr, "  %-9s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(os.Stderr, "\n`sweep COMMAND -h` shows a command's flags.")
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			if err != errUsage {
				log.Print(errorText(err))
			}
			return 2
		}
		log.Print(errorText(err))
		return 1
	}
	log.Printf("unknown command %q", args[0])
	usage()
	return 2
}

// errorText is err's message under the log's "sweep: " prefix: without the
// "usage: " that marks usage errors (they often say "usage: ..." themselves)
// and without a "sweep: " of the sweep package's own.
func errorText(err error) string {
	msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
	return strings.TrimPrefix(msg, "sweep: ")
}

// argCount checks a command's positional arguments, saying what it takes
// and what was extra or missing (after its usage line).
func argCount(fs *flag.FlagSet, pos []string, lo, hi int, takes string) error {
	switch {
	case len(pos) < lo:
		fs.Usage()
		return fmt.Errorf("%w: %s takes %s; got none", errUsage, fs.Name(), takes)
	case len(pos) > hi:
		fs.Usage()
		return fmt.Errorf("%w: %s takes %s; unexpected %q", errUsage, fs.Name(), takes, pos[hi:])
	}
	return nil
}

// newFlags returns a flag set whose parse errors are usage errors.
func newFlags(name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sweep %s\n", usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, allowing them before and after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
