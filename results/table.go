package results

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/readsweep/readsweep/methods/all"
)

// Cell is one table entry: its text, the number it shows (NaN for none)
// and whether it is the column's best.
type Cell struct {
	Text  string
	Value float64
	Best  bool
}

// Table is a rendered-to-be table.
type Table struct {
	Title  string
	Header []string
	Rows   [][]Cell
	Notes  []string
}

var datasetNames = map[string]string{
	"cola": "CoLA", "mnli": "MNLI", "qnli": "QNLI", "mrpc": "MRPC", "qqp": "QQP", "sst2": "SST-2", "stsb": "STS-B", "rte": "RTE",
}

// name is a method's name in tables, as the registry gives it.
func name(m string) string { return all.Registry().Display(m) }

// paperTable1 holds the paper's Table 1: params %, power kW, energy kWh, then
// CoLA, MNLI, QNLI, MRPC, QQP, SST-2, STS-B and its printed Avg.
var paperTable1 = map[string][10]float64{
	"full":    {100, 0.77, 12.52, 53.97, 86.17, 90.87, 86.88, 89.71, 92.89, 88.19},
	"adapter": {0.96, 0.50, 6.99, 52.56, 85.68, 92.89, 87.84, 88.95, 93.12, 87.51},
	"lora":    {0.48, 0.68, 10.58, 51.70, 85.20, 92.72, 88.07, 88.92, 93.46, 86.97},
	"bitfit":  {0.06, 0.47, 7.68, 50.92, 85.28, 92.58, 86.32, 88.70, 94.15, 86.94},
	"prompt":  {0.01, 0.50, 6.45, 42.71, 79.38, 91.73, 86.04, 88.74, 93.12, 84.96},
	"lst":     {2.00, 0.44, 10.59, 53.38, 84.53, 92.43, 87.38, 88.31, 92.09, 87.37},
	"read":    {0.80, 0.43, 2.06, 52.59, 85.25, 92.93, 87.09, 89.10, 93.80, 87.77},
}

var paperAvg = map[string]float64{"full": 84.52, "adapter": 85.04, "lora": 84.89, "bitfit": 84.43, "prompt": 82.38, "lst": 84.58, "read": 84.97}

var paperColumns = []string{"cola", "mnli", "qnli", "mrpc", "qqp", "sst2", "stsb"}

func numCell(v float64, format string) Cell {
	if math.IsNaN(v) {
		return Cell{Text: "–", Value: math.NaN()}
	}
	return Cell{Text: fmt.Sprintf(format, v), Value: v}
}

// Table1 lays out the paper's Table 1 for rows over datasets. withPaper
// adds the paper's own rows (its printed Avg. and the plain mean of its
// columns).
func Table1(rows []Row, datasets []string, withPaper bool) Table {
	t := Table{Title: "Table 1: GLUE test scores (mean over seeds ± std), trainable parameters, power and training energy"}
	t.Header = []string{"Method", "Trainable Params (%)", "Power (kW)", "Energy (kWh)"}
	for _, d := range datasets {
		t.Header = append(t.Header, datasetNames[d])
	}
	t.Header = append(t.Header, "Avg.")
	for _, r := range rows {
		row := []Cell{{Text: name(r.Method) + " (" + r.Arch + ")", Value: math.NaN()},
			numCell(r.TrainablePct, "%.2f"), numCell(r.PowerKW, "%.3g"), numCell(r.EnergyKWh, "%.3g")}
		for _, d := range datasets {
			s, ok := r.Scores[d]
			switch {
			case !ok:
				row = append(row, Cell{Text: "–", Value: math.NaN()})
			case s.N > 1:
				row = append(row, Cell{Text: fmt.Sprintf("%.2f ± %.2f", s.Mean, s.Std), Value: s.Mean})
			default:
				row = append(row, numCell(s.Mean, "%.2f"))
			}
		}
		row = append(row, numCell(r.Avg, "%.2f"))
		t.Rows = append(t.Rows, row)
	}
	// Best per column: lowest parameters, power and energy; highest scores.
	for c := 1; c < len(t.Header); c++ {
		markBest(t.Rows, c, c <= 3)
	}
	sources := map[string]bool{}
	for _, r := range rows {
		if r.EnergySource != "" {
			sources[r.EnergySource] = true
		}
	}
	for s := range sources {
		t.Notes = append(t.Notes, "Energy: "+s+".")
	}
	t.Notes = append(t.Notes, precisionNote(rows))
	t.Notes = append(t.Notes, "Avg. is the plain mean of the task columns shown.")
	if withPaper {
		for _, m := range all.Registry().Names() {
			p, ok := paperTable1[m]
			if !ok {
				continue
			}
			row := []Cell{{Text: "paper: " + name(m), Value: math.NaN()}, numCell(p[0], "%.2f"), numCell(p[1], "%.2f"), numCell(p[2], "%.2f")}
			var sum float64
			for _, d := range datasets {
				if i := slices.Index(paperColumns, d); i >= 0 {
					row = append(row, numCell(p[3+i], "%.2f"))
				} else {
					row = append(row, Cell{Text: "–", Value: math.NaN()})
				}
			}
			for i := range paperColumns {
				sum += p[3+i]
			}
			row = append(row, Cell{Text: fmt.Sprintf("%.2f (printed %.2f)", sum/7, paperAvg[m]), Value: math.NaN()})
			t.Rows = append(t.Rows, row)
		}
		t.Notes = append(t.Notes, "Paper rows: arXiv 2305.15348 Table 1 (T5-base, V100 GPUs). Its printed Avg. is not the mean of its seven task columns; the mean is shown first.")
	}
	return t
}

// Table3 lays out the paper's Table 3 (efficiency) for rows.
func Table3(rows []Row, withPaper bool) Table {
	t := Table{Title: "Table 3: training energy, peak training memory, trainable parameters, inference time",
		Header: []string{"Method", "Training Energy (kWh)", "Training Memory (GB)", "Trainable Params (M / %)", "Inference Time (s)", "Inference Memory (GB)", "Energy, paper's estimate (kWh)"}}
	for _, r := range rows {
		t.Rows = append(t.Rows, []Cell{{Text: name(r.Method) + " (" + r.Arch + ")", Value: math.NaN()},
			numCell(r.EnergyKWh, "%.3g"), numCell(r.PeakMemoryGB, "%.3g"),
			paramsCell(r),
			numCell(r.InferenceS, "%.3g"), {Text: "–", Value: math.NaN()}, numCell(r.EnergyPaperKWh, "%.3g")})
	}
	for c := 1; c <= 4; c++ {
		markBest(t.Rows, c, true)
	}
	t.Notes = append(t.Notes, precisionNote(rows))
	t.Notes = append(t.Notes, "Training memory is the GPU allocator's peak on a GPU, else the training process's peak RSS; inference time is greedy decoding of one test example at batch 1; inference memory is not measured separately yet. The paper's estimate is sampled GPU utilisation × p₀ (Appendix D, Eq. 15; p₀ = training.gpu_p0_watts, 250 W as in the paper), shown beside NVML's energy counter; it is empty for runs without a GPU.")
	if withPaper {
		for _, p := range []struct {
			m                                string
			energy, mem, params, pct, s, inf float64
		}{
			{"full", 12.52, 17.86, 247.58, 100, 0.083, 0.943},
			{"lst", 10.59, 5.77, 5.04, 2.00, 0.165, 1.358},
			{"read", 2.07, 6.90, 1.97, 0.80, 0.093, 0.966},
		} {
			t.Rows = append(t.Rows, []Cell{{Text: "paper: " + name(p.m), Value: math.NaN()}, numCell(p.energy, "%.2f"), numCell(p.mem, "%.2f"),
				{Text: fmt.Sprintf("%.2f / %.2f", p.params, p.pct), Value: math.NaN()}, numCell(p.s, "%.3f"), numCell(p.inf, "%.3f"), numCell(p.energy, "%.2f")})
		}
		t.Notes = append(t.Notes, "Paper rows: Table 3 (T5-base on V100 GPUs; memory is GPU memory).")
	}
	return t
}

func paramsCell(r Row) Cell {
	if math.IsNaN(r.TrainablePct) {
		return Cell{Text: "–", Value: math.NaN()}
	}
	return Cell{Text: fmt.Sprintf("%.2f / %.2f", float64(r.TrainableParams)/1e6, r.TrainablePct), Value: float64(r.TrainableParams)}
}

// markBest flags the best value of column c among the measured rows (not
// the paper's).
func markBest(rows [][]Cell, c int, lowest bool) {
	best := -1
	for i, r := range rows {
		if c >= len(r) || math.IsNaN(r[c].Value) || strings.HasPrefix(r[0].Text, "paper: ") {
			continue
		}
		if best < 0 || (lowest && r[c].Value < rows[best][c].Value) || (!lowest && r[c].Value > rows[best][c].Value) {
			best = i
		}
	}
	if best >= 0 && len(rows) > 1 {
		rows[best][c].Best = true
	}
}

// Render writes t as md, csv, latex or json.
func Render(w io.Writer, t Table, format string) error {
	switch format {
	case "md":
		fmt.Fprintf(w, "**%s**\n\n| %s |\n|%s\n", t.Title, strings.Join(t.Header, " | "), strings.Repeat(" --- |", len(t.Header)))
		for _, r := range t.Rows {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = c.Text
				if c.Best {
					cells[i] = "**" + c.Text + "**"
				}
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
		for _, n := range t.Notes {
			fmt.Fprintf(w, "\n%s", n)
		}
		fmt.Fprintln(w)
		return nil
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(t.Header)
		for _, r := range t.Rows {
			rec := make([]string, len(r))
			for i, c := range r {
				rec[i] = c.Text
				if c.Best {
					rec[i] += " *"
				}
			}
			cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	case "latex":
		esc := strings.NewReplacer("%", `\%`, "±", `$\pm$`, "_", `\_`, "&", `\&`, "–", "--")
		fmt.Fprintf(w, "%% %s\n\\begin{tabular}{l%s}\n\\toprule\n", t.Title, strings.Repeat("r", len(t.Header)-1))
		hdr := make([]string, len(t.Header))
		for i, h := range t.Header {
			hdr[i] = esc.Replace(h)
		}
		fmt.Fprintf(w, "%s \\\\\n\\midrule\n", strings.Join(hdr, " & "))
		for _, r := range t.Rows {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = esc.Replace(c.Text)
				if c.Best {
					cells[i] = `\textbf{` + cells[i] + "}"
				}
			}
			fmt.Fprintf(w, "%s \\\\\n", strings.Join(cells, " & "))
		}
		fmt.Fprintln(w, "\\bottomrule\n\\end{tabular}")
		for _, n := range t.Notes {
			fmt.Fprintf(w, "%% %s\n", esc.Replace(n))
		}
		return nil
	case "json":
		type jcell struct {
			Text  string   `json:"text"`
			Value *float64 `json:"value,omitempty"`
			Best  bool     `json:"best,omitempty"`
		}
		out := struct {
			Title  string    `json:"title"`
			Header []string  `json:"header"`
			Rows   [][]jcell `json:"rows"`
			Notes  []string  `json:"notes"`
		}{Title: t.Title, Header: t.Header, Notes: t.Notes}
		for _, r := range t.Rows {
			var row []jcell
			for _, c := range r {
				jc := jcell{Text: c.Text, Best: c.Best}
				if !math.IsNaN(c.Value) {
					v := c.Value
					jc.Value = &v
				}
				row = append(row, jc)
			}
			out.Rows = append(out.Rows, row)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return fmt.Errorf("results: unknown format %q (want md, csv, latex or json)", format)
}

// precisionNote says what precision each method's products ran at: one
// line when every run agrees, else per method.
func precisionNote(rows []Row) string {
	var all []string
	per := make([]string, 0, len(rows))
	for _, r := range rows {
		ps := r.Precisions
		if len(ps) == 0 {
			ps = []string{"fp32"}
		}
		for _, p := range ps {
			if !slices.Contains(all, p) {
				all = append(all, p)
			}
		}
		per = append(per, name(r.Method)+" "+strings.Join(ps, " and "))
	}
	if len(all) <= 1 {
		p := "fp32"
		if len(all) == 1 {
			p = all[0]
		}
		return "Matrix products at " + p + " in every run (training setting precision)."
	}
	return "Matrix products (training setting precision): " + strings.Join(per, "; ") + "."
}
