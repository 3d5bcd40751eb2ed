package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestErrorTextHasOnePrefix: the log adds "sweep: ", so neither a usage
// error's "usage: " marker nor the sweep package's own "sweep: " doubles it.
func TestErrorTextHasOnePrefix(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: usage: sweep bench tpe|t5|read [flags]", errUsage), "usage: sweep bench tpe|t5|read [flags]"},
		{fmt.Errorf("%w: --backend %q: want openblas, gonum or cuda", errUsage, "x"), `--backend "x": want openblas, gonum or cuda`},
		{errors.New("sweep: study a/b/c: no trials"), "study a/b/c: no trials"},
		{errors.New("trial: lr must be positive"), "trial: lr must be positive"},
	} {
		if got := errorText(tc.err); got != tc.want {
			t.Errorf("errorText(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPlainJSONKeepsAngleBrackets: show and export print attributes as
// written, not HTML-escaped.
func TestPlainJSONKeepsAngleBrackets(t *testing.T) {
	got := plainJSON(map[string]any{"reason": "loss <nan> & 'inf'"})
	if want := `{"reason":"loss <nan> & 'inf'"}`; got != want {
		t.Fatalf("plainJSON = %s, want %s", got, want)
	}
}

// TestCLISaysWhatIsWrong: extra or missing arguments, an unknown dataset,
// a status without budgets, worker's help: each says what is wrong or
// shown, once.
func TestCLISaysWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, syntheticSweep("s.db", "{name: fine}", 3, ""))
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	os.WriteFile(filepath.Join(dir, "two-lines.txt"), []byte("sqlite:///s.db\nsqlite:///other.db\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", "sweep.yaml", "other.yaml"}, 2, `sweep: run takes one sweep file; unexpected ["other.yaml"]`},
		{[]string{"run"}, 2, "sweep: run takes one sweep file; got none"},
		{[]string{"run", "sweep.yaml", "--parallel", "0"}, 2, "sweep: --parallel 0: run at least 1 trial at once"},
		{[]string{"worker", "sweep.yaml", "--parallel", "-3"}, 2, "sweep: --parallel -3: run at least 1 trial at once"},
		{[]string{"final", "sweep.yaml", "--parallel", "0"}, 2, "sweep: --parallel 0: run at least 1 trial at once"},
		{[]string{"worker", "sweep.yaml", "--storage", "sqlite:///s.db", "--storage-file", "url.txt"}, 2, "sweep: --storage and --storage-file both name the storage; give one"},
		{[]string{"best", "--method", "synthetic", "extra", "--config", "sweep.yaml"}, 2, `sweep: best takes no arguments besides its flags; unexpected ["extra"]`},
		{[]string{"best", "--method", "synthetic", "--dataset", "sst3", "--config", "sweep.yaml"}, 1, "sweep: no synthetic studies on dataset sst3 (it has sst2)"},
		{[]string{"best", "--config", "sweep.yaml"}, 2, "best needs --method"},
		{[]string{"status", "--config", "sweep.yaml"}, 0, "synthetic/fine/sst2  3 of 3"},
		{[]string{"status", "--storage", "sqlite:///s.db"}, 0, "pass --config SWEEPS.yaml to see each study's budget"},
		{[]string{"worker", "sweep.yaml", "--storage", "sqlite:///other.db"}, 0, "sweep: warning: other.db holds no study; this worker plans its 1 studies there"},
		{[]string{"status", "--config", "sweep.yaml", "--job", "-h"}, 2, `--job "-h": want a Slurm job id such as 1234 or 1234_5`},
		{[]string{"submit", "--slurm", "sweep.yaml", "--workers", "0"}, 2, "--workers 0: submit at least 1"},
		{[]string{"studies", "--storage-file", "two-lines.txt"}, 1, "holds more than one line; it should hold the storage URL alone"},
	} {
		stdout, errOut, code := sweepCmd(t, dir, tc.args...)
		if code != tc.code || !strings.Contains(stdout+errOut, tc.want) {
			t.Errorf("sweep %v: exit %d (want %d), output lacks %q:\n%s%s", tc.args, code, tc.code, tc.want, stdout, errOut)
		}
		if strings.Contains(errOut, "sweep: sweep:") || strings.Contains(errOut, "usage: usage:") {
			t.Errorf("sweep %v doubles a prefix:\n%s", tc.args, errOut)
		}
	}
	_, help, _ := sweepCmd(t, dir, "worker", "-h")
	if strings.Count(help, "default") != 1 || !strings.Contains(help, "trials at once (default 1)") {
		t.Errorf("worker -h: want --parallel's default once:\n%s", help)
	}
}

// TestSecretsNeverShown: a storage URL's password, in its user information
// or its password and sslpassword parameters, appears in no command's
// output or error and in no Slurm job script, whose workers read the URL
// from a file of mode 0600 instead of their argv.
func TestSecretsNeverShown(t *testing.T) {
	dir := t.TempDir()
	const secret = "Sup3rSecretPw"
	// Port 1 on loopback: nothing answers, so every command that connects
	// fails, and its error must not carry the secret either.
	url := "postgresql://u:" + secret + "@127.0.0.1:1/sweeps?password=" + secret + "&sslpassword=" + secret
	// A short storage_retry: run and worker wait for a database that does
	// not answer, and say so (without the secret), for that long.
	writeConfig(t, dir, strings.Replace(syntheticSweep("s.db", "{name: fine}", 3, ""), "storage: sqlite:///s.db", "storage: "+url, 1)+"storage_retry: 2s\n")
	// A PostgreSQL service file keeps the password out of the URL; a
	// command that fails to connect with it, or to read it, must not
	// print the file's lines either.
	services := filepath.Join(dir, "pg_service.conf")
	broken := filepath.Join(dir, "broken_service.conf")
	if err := os.WriteFile(services, []byte("[sweeps]\nhost=127.0.0.1\nport=1\nuser=u\ndbname=sweeps\npassword="+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte("[sweeps]\nhost=127.0.0.1\npassword "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"run", "sweep.yaml", "--dry-run"},
		{"run", "sweep.yaml"},
		{"worker", "sweep.yaml"},
		{"submit", "--slurm", "sweep.yaml", "--dry-run"},
		{"studies", "--storage", url},
		{"studies", "--config", "sweep.yaml"},
		{"status", "--config", "sweep.yaml"},
		{"dashboard", "--addr", "127.0.0.1:0", url},
		{"studies", "--storage", "postgresql://u:" + secret + "@bad host/x"},
		// Passwords a URL parser misreads, mistyped schemes, other forms.
		{"studies", "--storage", "postgresql://alice:1234/" + secret + "@127.0.0.1:1/db"},
		{"studies", "--storage", "postgresql://alice:1234?" + secret + "@127.0.0.1:1/db"},
		{"studies", "--storage", "postgresql://alice:" + secret + "#x@127.0.0.1:1/db"},
		{"studies", "--storage", "postgresql://alice:" + secret + "%zz@127.0.0.1:1/db"},
		{"studies", "--storage", "postgresql:/alice:" + secret + "@127.0.0.1:1/db"},
		{"studies", "--storage", "sqlite://alice:" + secret + "@127.0.0.1:1/db"},
		{"studies", "--storage", "postgresql://u@127.0.0.1:1/db#password=" + secret},
		{"studies", "--storage", "postgresql://u@127.0.0.1:1/db?password=" + secret + ";x"},
		{"run", "sweep.yaml", "--dry-run", "--storage", "host=127.0.0.1 user=alice password=" + secret + " dbname=db"},
		{"run", "sweep.yaml", "--storage", "host=127.0.0.1 user=alice password=" + secret + " dbname=db"},
		{"studies", "--storage", "postgresql:///?service=sweeps&servicefile=" + services},
		{"run", "sweep.yaml", "--storage", "postgresql:///?service=sweeps&servicefile=" + services},
		{"studies", "--storage", "postgresql:///?service=sweeps&servicefile=" + broken},
	} {
		stdout, errOut, _ := sweepCmd(t, dir, args...)
		if strings.Contains(stdout+errOut, secret) {
			t.Errorf("sweep %v shows the password:\n%s%s", args[:2], stdout, errOut)
		}
		if args[0] == "submit" && !strings.Contains(stdout, "--storage-file") {
			t.Errorf("the job script does not pass the URL by file:\n%s", stdout)
		}
	}
	// The broken service file is named, with its line, and nothing of it.
	if _, errOut, code := sweepCmd(t, dir, "studies", "--storage", "postgresql:///?service=sweeps&servicefile="+broken); code == 0 ||
		!strings.Contains(errOut, `service "sweeps": service file `+broken+": unable to parse line 3") {
		t.Errorf("a broken service file: exit %d, want it and its line named:\n%s", code, errOut)
	}
	// A libpq key=value string is refused, not made into a SQLite file
	// named after it, password and all.
	if made, _ := filepath.Glob(filepath.Join(dir, "host=*")); len(made) > 0 {
		t.Errorf("a key=value storage string became files %v", made)
	}
}

// TestNonFiniteAttributesFromOptuna: Optuna stores attributes with Python's
// json.dumps, which writes bare NaN and Infinity. The reading commands show
// them, and the trial's other attributes, instead of failing the study.
func TestNonFiniteAttributesFromOptuna(t *testing.T) {
	dir := t.TempDir()
	script := `
import optuna, sys
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.create_study(study_name="nonfinite", storage="sqlite:///" + sys.argv[1], direction="maximize")
s.set_user_attr("study_score", float("nan"))
def f(trial):
    x = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    trial.set_user_attr("loss", float("nan"))
    trial.set_user_attr("bound", [float("inf"), -float("inf")])
    trial.set_user_attr("note", "kept")
    return x
s.optimize(f, n_trials=2)
`
	if out, err := exec.Command("/usr/bin/python3", "-c", script, filepath.Join(dir, "nf.db")).CombinedOutput(); err != nil {
		t.Fatalf("Optuna (apt-get install python3-optuna) could not write the database: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"studies", "--storage", "sqlite:///nf.db"}, []string{"nonfinite"}},
		{[]string{"trials", "nonfinite", "--storage", "sqlite:///nf.db"}, []string{"COMPLETE"}},
		{[]string{"show", "nonfinite#1", "--storage", "sqlite:///nf.db"}, []string{"NaN", "Infinity", "-Infinity", "kept"}},
		{[]string{"export", "--format", "json", "--storage", "sqlite:///nf.db"}, []string{`"NaN"`, `"kept"`}},
	} {
		stdout, errOut, code := sweepCmd(t, dir, tc.args...)
		if code != 0 {
			t.Errorf("sweep %v: exit %d\n%s%s", tc.args, code, stdout, errOut)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("sweep %v does not show %s:\n%s", tc.args, w, stdout)
			}
		}
	}
}

// TestSQLiteURLReadAsSQLAlchemyDoes: sqlite:///a#b%41.db names the file
// "a#b%41.db", as SQLAlchemy reads it (nothing unescaped, '#' no fragment):
// the sweep writes that file and Optuna finds the study in it.
func TestSQLiteURLReadAsSQLAlchemyDoes(t *testing.T) {
	dir := t.TempDir()
	const name = "a#b%41.db"
	writeConfig(t, dir, syntheticSweep(name, "{name: fine}", 2, ""))
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	if !slices.Contains(files, name) {
		t.Fatalf("the run wrote %v, want a file named %q", files, name)
	}
	// Debian's Optuna 3.1 reads the newer schema version only with the
	// compatibility check off.
	script := `
import optuna, sys
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = optuna.storages.RDBStorage(sys.argv[1], skip_compatibility_check=True)
print(len(optuna.load_study(study_name="synthetic/fine/sst2", storage=storage).trials))
`
	py := exec.Command("/usr/bin/python3", "-c", script, "sqlite:///"+name)
	py.Dir = dir
	out, err := py.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "2" {
		t.Errorf("Optuna on sqlite:///%s: %v\n%s", name, err, out)
	}
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml", "--storage", "sqlite:///x.db?mode=ro"); code == 0 || !strings.Contains(errOut, "SQLite URL parameters (?mode=ro) are not supported") {
		t.Errorf("a SQLite URL with parameters: exit %d\n%s", code, errOut)
	}
}

// TestSubmitScript: sweep submit --dry-run writes the options a cluster
// user passes (and any other with --sbatch-arg) as #SBATCH lines, appends
// to a requeued task's log, stops a task that cannot enter the submit
// folder, quotes every path for bash whatever it holds, and refuses an
// option with a line break, which would smuggle a command into the script.
// $SWEEP_STORAGE names the storage of a sweep file that names none.
func TestSubmitScript(t *testing.T) {
	dir := filepath.Join(t.TempDir(), `it's $HOME "and" $(date)`)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, dir, strings.Replace(syntheticSweep("s.db", "{name: fine}", 3, ""), "storage: sqlite:///s.db\n", "", 1))
	t.Setenv("SWEEP_STORAGE", "sqlite:///from-env.db")
	script, errOut, code := sweepCmd(t, dir, "submit", "--slurm", "sweep.yaml", "--dry-run", "--workers", "3",
		"--account", "proj1", "--qos", "high", "--mem", "32G", "--cpus-per-task", "8", "--constraint", "a100",
		"--job-name", "read #1", "--output", "logs/w-%A_%a.out", "--sbatch-arg=--mail-type=END", "--sbatch-arg", "--exclusive")
	if code != 0 {
		t.Fatalf("submit --dry-run: exit %d\n%s", code, errOut)
	}
	// sbatch's own quoting: a value in double quotes, \\ \" and \# escaped.
	sbatchQuoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "#", `\#`).Replace(filepath.Join(dir, "logs/w-%A_%a.out"))
	for _, want := range []string{`#SBATCH --account="proj1"` + "\n", `#SBATCH --qos="high"` + "\n", `#SBATCH --mem="32G"` + "\n",
		`#SBATCH --cpus-per-task="8"` + "\n", `#SBATCH --constraint="a100"` + "\n", `#SBATCH --job-name="read \#1"` + "\n",
		`#SBATCH --output="` + sbatchQuoted + `"` + "\n", `#SBATCH --open-mode="append"` + "\n", `#SBATCH --signal="B:TERM@70"` + "\n",
		`#SBATCH --mail-type="END"` + "\n#SBATCH --exclusive\n", `#SBATCH --array="0-2"` + "\n", "from-env.db", "|| {"} {
		if !strings.Contains(script, want) {
			t.Errorf("the script lacks %q:\n%s", want, script)
		}
	}
	path := filepath.Join(t.TempDir(), "sweep.sbatch")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s\n%s", err, out, script)
	}
	// Run the script's cd line: it must enter the folder as named, with
	// nothing expanded, or stop.
	for _, line := range strings.Split(script, "\n") {
		if !strings.HasPrefix(line, "cd ") {
			continue
		}
		out, err := exec.Command("bash", "-c", line+" && pwd").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != dir {
			t.Errorf("%s: %v: %s, want %s", line, err, out, dir)
		}
		os.Rename(dir, dir+".gone")
		out, err = exec.Command("bash", "-c", line+"; echo went on").CombinedOutput()
		os.Rename(dir+".gone", dir)
		if err == nil || strings.Contains(string(out), "went on") {
			t.Errorf("without the folder the script went on: %v: %s", err, out)
		}
	}
	// status reads the storage run used: $SWEEP_STORAGE, for a sweep file
	// that names none.
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	if status, errOut, code := sweepCmd(t, dir, "status", "--config", "sweep.yaml"); code != 0 || !strings.Contains(status, "3 of 3") {
		t.Errorf("status --config after run with $SWEEP_STORAGE: exit %d\n%s%s", code, status, errOut)
	}
	_, errOut, code = sweepCmd(t, dir, "submit", "--slurm", "sweep.yaml", "--dry-run", "--sbatch-arg", "--comment=x\nrm -rf ~")
	if code != 2 || !strings.Contains(errOut, "line break") {
		t.Errorf("an option with a line break: exit %d\n%s", code, errOut)
	}
	for _, tc := range []struct{ args, want string }{
		{"--sbatch-arg mail-type=END", "give an sbatch option"},
		{"--sbatch-arg --array=0-99", "submit sets it from --workers"},
		{"--sbatch-arg --arr=0-99", "--arr (--array): submit sets it from --workers"},
		{"--sbatch-arg -o/tmp/x", "use --output"},
		{"--job-name=", "has an empty value"},
	} {
		_, errOut, code = sweepCmd(t, dir, append([]string{"submit", "--slurm", "sweep.yaml", "--dry-run"}, strings.Fields(tc.args)...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d\n%s", tc.args, code, errOut)
		}
	}
}
