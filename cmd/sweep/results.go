package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/readsweep/readsweep/results"
	"github.com/readsweep/readsweep/sweep/storage"
)

func cmdTable(args []string) error {
	fs := newFlags("table", "table [--format md|csv|latex|json] [--out FILE] [--with-paper] [--table 1|3|all] [--storage URL | --config FILE]")
	format := fs.String("format", "md", "md, csv, latex or json")
	out := fs.String("out", "", "write here instead of stdout")
	withPaper := fs.Bool("with-paper", false, "add the paper's own rows")
	which := fs.String("table", "all", "1, 3 or all")
	get := storageFlags(fs)
	return withStore(fs, args, 0, 0, get, func(ctx context.Context, s *storage.DB, _ []string) error {
		if *which != "1" && *which != "3" && *which != "all" {
			return fmt.Errorf("%w: --table %q: want 1, 3 or all", errUsage, *which)
		}
		rows, datasets, err := results.Collect(ctx, s)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("no final runs in the database: run `sweep final SWEEPS.yaml` after the sweep")
		}
		var tables []results.Table
		if *which != "3" {
			tables = append(tables, results.Table1(rows, datasets, *withPaper))
		}
		if *which != "1" {
			tables = append(tables, results.Table3(rows, *withPaper))
		}
		return writeOutput(*out, func(w io.Writer) error {
			for i, t := range tables {
				if i > 0 && *format != "json" {
					fmt.Fprintln(w)
				}
				if err := results.Render(w, t, *format); err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
			}
			return nil
		})
	})
}

// writeOutput runs write on standard output, or on the file at path when
// one is given; a failed close (where a full disk shows) is an error too.
func writeOutput(path string, write func(io.Writer) error) error {
	if path == "" {
		return write(os.Stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func cmdPlot(args []string) error {
	fs := newFlags("plot", "plot [--out results/output/figures] [--storage URL | --config FILE]")
	out := fs.String("out", "results/output/figures", "folder for the PNG and SVG files")
	get := storageFlags(fs)
	return withStore(fs, args, 0, 0, get, func(ctx context.Context, s *storage.DB, _ []string) error {
		rows, _, err := results.Collect(ctx, s)
		if err != nil {
			return err
		}
		files, err := results.Figure1(rows, *out)
		if err != nil {
			return err
		}
		more, err := results.StudyPlots(ctx, s, *out)
		if err != nil {
			return err
		}
		files = append(files, more...)
		fmt.Fprintf(os.Stderr, "sweep: wrote %d files to %s (Figure 1 needs final runs: %d methods have them)\n", len(files), *out, len(rows))
		return nil
	})
}
