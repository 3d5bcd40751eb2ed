package results

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// saveBoth writes a plot as PNG and SVG and returns the paths.
func saveBoth(p *plot.Plot, dir, base string) ([]string, error) {
	var out []string
	for _, ext := range []string{".png", ".svg"} {
		path := filepath.Join(dir, base+ext)
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
			return out, fmt.Errorf("results: %s: %w", path, err)
		}
		out = append(out, path)
	}
	return out, nil
}

// scatter plots one point per method with its name beside it.
func scatter(rows []Row, title, xlabel string, x func(Row) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "GLUE average (test)"
	var xys plotter.XYs
	var labels []string
	for _, r := range rows {
		if math.IsNaN(r.Avg) || math.IsNaN(x(r)) {
			continue
		}
		xys = append(xys, plotter.XY{X: x(r), Y: r.Avg})
		labels = append(labels, name(r.Method))
	}
	if len(xys) == 0 {
		return nil, nil
	}
	s, err := plotter.NewScatter(xys)
	if err != nil {
		return nil, err
	}
	s.GlyphStyle.Radius = vg.Points(4)
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = -0.1
	}
	p.Add(s, l, plotter.NewGrid())
	// Room for the labels at the edges.
	dx, dy := (p.X.Max-p.X.Min)*0.15+1e-12, (p.Y.Max-p.Y.Min)*0.1+1
	p.X.Min, p.X.Max = p.X.Min-dx*0.2, p.X.Max+dx
	p.Y.Min, p.Y.Max = p.Y.Min-dy, p.Y.Max+dy
	return p, nil
}

// Figure1 writes the paper's Figure 1 panels: GLUE average against training
// energy, against peak training memory, and each method's energy relative
// to full fine-tuning (or the largest).
func Figure1(rows []Row, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, fig := range []struct {
		base, title, xlabel string
		x                   func(Row) float64
	}{
		{"figure1-energy", "GLUE average vs training energy", "training energy (kWh)", func(r Row) float64 { return r.EnergyKWh }},
		{"figure1-memory", "GLUE average vs peak training memory", "peak training memory (GB)", func(r Row) float64 { return r.PeakMemoryGB }},
	} {
		p, err := scatter(rows, fig.title, fig.xlabel, fig.x)
		if err != nil {
			return files, err
		}
		if p == nil {
			continue
		}
		f, err := saveBoth(p, dir, fig.base)
		if err != nil {
			return files, err
		}
		files = append(files, f...)
	}
	ref := 0.0
	for _, r := range rows {
		if r.Method == "full" {
			ref = r.EnergyKWh
		}
	}
	if ref == 0 {
		for _, r := range rows {
			ref = math.Max(ref, r.EnergyKWh)
		}
	}
	if ref > 0 {
		p := plot.New()
		p.Title.Text = "Training energy, relative"
		p.Y.Label.Text = "energy / reference"
		var vals plotter.Values
		var names []string
		for _, r := range rows {
			vals = append(vals, r.EnergyKWh/ref)
			names = append(names, name(r.Method))
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(28))
		if err != nil {
			return files, err
		}
		p.Add(bars, plotter.NewGrid())
		p.NominalX(names...)
		f, err := saveBoth(p, dir, "figure1-relative-energy")
		if err != nil {
			return files, err
		}
		files = append(files, f...)
	}
	return files, nil
}

// StudyPlots writes, for every sweep study, its optimisation history (each
// trial's value and the best so far) and its learning rate against the
// validation value, as optuna-dashboard shows them.
func StudyPlots(ctx context.Context, s storage.Storage, dir string) ([]string, error) {
	studies, err := s.Studies(ctx)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, st := range studies {
		if sweep.Identify(st).Final {
			continue
		}
		trials, err := s.Trials(ctx, st.ID)
		if err != nil {
			return files, err
		}
		var hist, best, lrs plotter.XYs
		bestSoFar := math.Inf(-1)
		if st.Direction == storage.Minimize {
			bestSoFar = math.Inf(1)
		}
		for _, t := range trials {
			if t.State != storage.Complete || t.Value == nil || math.IsInf(*t.Value, 0) || math.IsNaN(*t.Value) {
				continue
			}
			v := *t.Value
			hist = append(hist, plotter.XY{X: float64(t.Number), Y: v})
			if st.Direction.Better(v, bestSoFar) {
				bestSoFar = v
			}
			best = append(best, plotter.XY{X: float64(t.Number), Y: bestSoFar})
			if lr, ok := t.Params["lr"]; ok && lr > 0 {
				lrs = append(lrs, plotter.XY{X: lr, Y: v})
			}
		}
		if len(hist) == 0 {
			continue
		}
		base := strings.ReplaceAll(st.Name, "/", "_")
		p := plot.New()
		p.Title.Text = st.Name + ": optimisation history"
		p.X.Label.Text = "trial"
		p.Y.Label.Text = "validation"
		sc, err := plotter.NewScatter(hist)
		if err != nil {
			return files, err
		}
		line, err := plotter.NewLine(best)
		if err != nil {
			return files, err
		}
		p.Add(sc, line, plotter.NewGrid())
		p.Legend.Add("trial", sc)
		p.Legend.Add("best so far", line)
		f, err := saveBoth(p, dir, base+"-history")
		if err != nil {
			return files, err
		}
		files = append(files, f...)
		if len(lrs) == 0 {
			continue
		}
		q := plot.New()
		q.Title.Text = st.Name + ": learning rate"
		q.X.Label.Text = "learning rate"
		q.Y.Label.Text = "validation"
		q.X.Scale = plot.LogScale{}
		q.X.Tick.Marker = plot.LogTicks{Prec: -1}
		ls, err := plotter.NewScatter(lrs)
		if err != nil {
			return files, err
		}
		q.Add(ls, plotter.NewGrid())
		// A log axis needs a positive range even for one point.
		lo, hi := math.Inf(1), 0.0
		for _, xy := range lrs {
			lo, hi = math.Min(lo, xy.X), math.Max(hi, xy.X)
		}
		q.X.Min, q.X.Max = lo/2, hi*2
		f, err = saveBoth(q, dir, base+"-lr")
		if err != nil {
			return files, err
		}
		files = append(files, f...)
	}
	return files, nil
}
