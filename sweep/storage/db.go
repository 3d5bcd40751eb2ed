package storage

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Schema identifiers Optuna checks when it opens a database.
const (
	AlembicVersion = "v3.2.0.a"
	SchemaVersion  = 12
	LibraryVersion = "3.2.0"
)

// timeLayout is how Optuna's SQLAlchemy models store DATETIME columns.
const timeLayout = "2006-01-02 15:04:05.000000"

const sqliteDDL = `
CREATE TABLE IF NOT EXISTS studies (
	study_id INTEGER NOT NULL,
	study_name VARCHAR(512) NOT NULL,
	PRIMARY KEY (study_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_studies_study_name ON studies (study_name);
CREATE TABLE IF NOT EXISTS version_info (
	version_info_id INTEGER NOT NULL,
	schema_version INTEGER,
	library_version VARCHAR(256),
	PRIMARY KEY (version_info_id),
	CHECK (version_info_id=1)
);
CREATE TABLE IF NOT EXISTS study_directions (
	study_direction_id INTEGER NOT NULL,
	direction VARCHAR(8) NOT NULL,
	study_id INTEGER NOT NULL,
	objective INTEGER NOT NULL,
	PRIMARY KEY (study_direction_id),
	UNIQUE (study_id, objective),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE IF NOT EXISTS study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL,
	study_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (study_user_attribute_id),
	UNIQUE (study_id, "key"),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE IF NOT EXISTS study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL,
	study_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (study_system_attribute_id),
	UNIQUE (study_id, "key"),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE IF NOT EXISTS trials (
	trial_id INTEGER NOT NULL,
	number INTEGER,
	study_id INTEGER,
	state VARCHAR(8) NOT NULL,
	datetime_start DATETIME,
	datetime_complete DATETIME,
	PRIMARY KEY (trial_id),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE INDEX IF NOT EXISTS ix_trials_study_id ON trials (study_id);
CREATE TABLE IF NOT EXISTS trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL,
	trial_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (trial_user_attribute_id),
	UNIQUE (trial_id, "key"),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL,
	trial_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (trial_system_attribute_id),
	UNIQUE (trial_id, "key"),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_params (
	param_id INTEGER NOT NULL,
	trial_id INTEGER,
	param_name VARCHAR(512),
	param_value FLOAT,
	distribution_json TEXT,
	PRIMARY KEY (param_id),
	UNIQUE (trial_id, param_name),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_values (
	trial_value_id INTEGER NOT NULL,
	trial_id INTEGER NOT NULL,
	objective INTEGER NOT NULL,
	value FLOAT,
	value_type VARCHAR(7) NOT NULL,
	PRIMARY KEY (trial_value_id),
	UNIQUE (trial_id, objective),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL,
	trial_id INTEGER NOT NULL,
	step INTEGER NOT NULL,
	intermediate_value FLOAT,
	intermediate_value_type VARCHAR(7) NOT NULL,
	PRIMARY KEY (trial_intermediate_value_id),
	UNIQUE (trial_id, step),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL,
	trial_id INTEGER NOT NULL,
	heartbeat DATETIME NOT NULL,
	PRIMARY KEY (trial_heartbeat_id),
	UNIQUE (trial_id),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
`

// DB is a Storage in an SQL database in Optuna's RDB schema: one SQLite
// file, or a PostgreSQL server shared by many machines. It is safe for
// concurrent use by goroutines and by processes sharing the database.
type DB struct {
	db       *sql.DB
	path     string // the file, or the server's URL without its password
	now      func() time.Time
	d        *dialect
	readOnly bool
	// immutable: a SQLite file read as a snapshot, since this process may
	// not write its folder or the file itself (see OpenReadOnly).
	immutable bool

	outages Outages
	out     outageState
}

// Immutable reports whether the database was opened as a snapshot that
// does not follow later writes (a SQLite file in a read-only folder, or
// one this process may not write).
func (s *DB) Immutable() bool { return s.immutable }

// Open opens the storage named by a URL. Only sqlite URLs are implemented:
// sqlite:///relative/path.db and sqlite:////absolute/path.db, as SQLAlchemy
// (and so Optuna) spells them. A bare path is taken as a SQLite file.
func Open(rawURL string) (*DB, error) { return OpenRidingOutages(rawURL, Outages{}) }

// OpenRidingOutages is Open for a process that writes for hours (sweep run,
// a worker): opening and every transaction ride out a database outage
// of up to o.RetryFor.
func OpenRidingOutages(rawURL string, o Outages) (*DB, error) {
	if isPostgres(rawURL) {
		return openPostgres(rawURL, false, o)
	}
	path, err := sqlitePath(rawURL)
	if err != nil {
		return nil, err
	}
	return OpenSQLite(path) // a local file has no outages to ride
}

// libpqKeyValue is the start of a libpq connection string ("host=db ...").
var libpqKeyValue = regexp.MustCompile(`^\s*[a-z_]+\s*=`)

// isPostgres reports whether a storage URL names a PostgreSQL server
// (the scheme in any case, as SQLAlchemy takes it).
func isPostgres(rawURL string) bool {
	scheme, _, ok := strings.Cut(rawURL, "://")
	scheme = strings.ToLower(scheme)
	return ok && (scheme == "postgresql" || scheme == "postgres" || scheme == "postgresql+psycopg2")
}

// SQLiteFile is the database file a storage URL names, read as
// SQLAlchemy (and so Optuna) reads it: everything after sqlite:/// up to a
// '?' is the path, verbatim ('#' and '%' included, nothing unescaped). A
// plain path names a file too. ok is false for a server URL.
func SQLiteFile(rawURL string) (path string, ok bool, err error) {
	if !strings.Contains(rawURL, "://") {
		lower := strings.ToLower(rawURL)
		switch {
		case rawURL == "":
			return "", true, errors.New("storage: empty storage URL")
		case strings.HasPrefix(lower, "sqlite:"), strings.HasPrefix(lower, "postgresql:"), strings.HasPrefix(lower, "postgres:"):
			return "", true, fmt.Errorf("storage: %q: want sqlite:///relative.db, sqlite:////absolute.db or postgresql://host/db", Redact(rawURL))
		case libpqKeyValue.MatchString(rawURL):
			// Not a file name, though it would make a fine one.
			return "", true, fmt.Errorf("storage: %q is a libpq key=value string, which is not supported: write it as a URL, postgresql://user@host:port/dbname", Redact(rawURL))
		}
		return rawURL, true, nil
	}
	scheme, rest, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "sqlite":
		path, query, _ := strings.Cut(rest, "?")
		if !strings.HasPrefix(path, "/") || len(path) < 2 {
			return "", true, fmt.Errorf("storage: %q: want sqlite:///relative.db or sqlite:////absolute.db", Redact(rawURL))
		}
		if query != "" {
			return "", true, fmt.Errorf("storage: %q: SQLite URL parameters (?%s) are not supported", Redact(rawURL), Redact(query))
		}
		return path[1:], true, nil
	case "postgresql", "postgres", "postgresql+psycopg2":
		return "", false, nil
	case "mysql":
		return "", false, fmt.Errorf("storage: %q: mysql storage is not implemented; use sqlite:///path.db or postgresql://...", Redact(rawURL))
	}
	return "", false, fmt.Errorf("storage: %q: unknown scheme %q (want sqlite or postgresql)", Redact(rawURL), scheme)
}

func sqlitePath(rawURL string) (string, error) {
	path, _, err := SQLiteFile(rawURL)
	return path, err
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// sqliteURI is path as the file: URI go-sqlite3 hands to SQLite, which
// would read '?' as its parameters, '#' as a fragment and '%' as an escape.
func sqliteURI(path string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(path)
}

// OpenSQLite opens (creating if needed) the SQLite file at path.
func OpenSQLite(path string) (*DB, error) {
	if dir := filepath.Dir(path); !isDir(dir) {
		return nil, fmt.Errorf("storage: open %s: the folder %s does not exist", path, dir)
	}
	// _txlock=immediate takes the write lock at BEGIN, so two processes never
	// deadlock upgrading read locks; the busy timeout queues them instead.
	dsn := sqliteURI(path) + "?_journal_mode=WAL&_busy_timeout=30000&_txlock=immediate&_foreign_keys=1&_synchronous=NORMAL"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	s := &DB{db: db, path: path, now: time.Now, d: sqliteDialect}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	return s, nil
}

// OpenReadOnly opens an existing study database for reading only, as the
// dashboard and the inspecting commands do: SQLite with mode=ro and
// deferred transactions, so a reader never takes the write lock that a
// running sweep needs (read-write connections here begin IMMEDIATE);
// PostgreSQL with default_transaction_read_only. It never creates or
// upgrades a schema: a file without one is an error, and left untouched.
func OpenReadOnly(rawURL string) (*DB, error) {
	if isPostgres(rawURL) {
		return openPostgres(rawURL, true, Outages{})
	}
	path, err := sqlitePath(rawURL)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("storage: no database at %s", path)
	}
	dsn := sqliteURI(path) + "?mode=ro&_busy_timeout=30000&_txlock=deferred&_foreign_keys=1"
	// A reader of a WAL database makes its -shm (and -wal) file beside it:
	// in a folder it cannot write that fails, and beside a file it cannot
	// write they are left behind. There it reads the file as immutable,
	// a snapshot that makes no file (and sees no sweep writing it).
	immutable := !writable(filepath.Dir(path)) || !writable(path)
	if immutable {
		dsn += "&immutable=1"
	}
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	s := &DB{db: db, path: path, now: time.Now, d: sqliteDialect, readOnly: true, immutable: immutable}
	if err := s.checkSchema(); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	return s, nil
}

// checkSchema checks that a database opened read-only holds Optuna's schema.
func (s *DB) checkSchema() error {
	var version string
	if err := s.db.QueryRow(`SELECT version_num FROM alembic_version`).Scan(&version); err != nil {
		return fmt.Errorf("not a study database (no Optuna schema: %v)", err)
	}
	if version != AlembicVersion && version != "v3.0.0.d" {
		return fmt.Errorf("database schema is Optuna revision %s, this tool reads %s", version, AlembicVersion)
	}
	return nil
}

// ReadOnly reports whether the database was opened with OpenReadOnly.
func (s *DB) ReadOnly() bool { return s.readOnly }

// Path returns the database file's path.
func (s *DB) Path() string { return s.path }

// Close closes the database.
func (s *DB) Close() error { return s.db.Close() }

func (s *DB) init() error {
	ctx := context.Background()
	var version string
	err := s.db.QueryRowContext(ctx, `SELECT version_num FROM alembic_version`).Scan(&version)
	if err != nil && s.d.name == "postgres" && !strings.Contains(err.Error(), "does not exist") {
		return err // a connection problem, not a new database
	}
	if err == nil {
		if version != AlembicVersion && version != "v3.0.0.d" {
			return fmt.Errorf("database schema is Optuna revision %s, this tool writes %s; HINT: run `optuna storage upgrade --storage sqlite:///FILE` first", version, AlembicVersion)
		}
		return nil
	}
	return s.tx(ctx, func(tx tx) error {
		if s.d.initLock != "" {
			if _, err := tx.Exec(s.d.initLock); err != nil {
				return err
			}
		}
		for _, stmt := range strings.Split(s.d.ddl, ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.Exec(stmt); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(`INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?, ?) ON CONFLICT DO NOTHING`, SchemaVersion, LibraryVersion); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM alembic_version`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			_, err := tx.Exec(`INSERT INTO alembic_version (version_num) VALUES (?)`, AlembicVersion)
			return err
		}
		return nil
	})
}

// tx runs fn in one transaction, retrying it with back-off when the
// connection was lost (PostgreSQL); a failed attempt leaves nothing behind.
func (s *DB) tx(ctx context.Context, fn func(tx) error) error {
	return s.retrying(ctx, func() error { return s.tx1(ctx, fn) })
}

func (s *DB) tx1(ctx context.Context, fn func(tx) error) error {
	t, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx{t, s.d}); err != nil {
		t.Rollback()
		return err
	}
	return t.Commit()
}

// tx is a transaction that speaks the dialect: queries are written with ?
// placeholders.
type tx struct {
	*sql.Tx
	d *dialect
}

func (t tx) Exec(q string, args ...any) (sql.Result, error) { return t.Tx.Exec(t.d.bind(q), args...) }
func (t tx) QueryRow(q string, args ...any) *sql.Row        { return t.Tx.QueryRow(t.d.bind(q), args...) }
func (t tx) Query(q string, args ...any) (*sql.Rows, error) {
	return t.Tx.Query(t.d.bind(q), args...)
}

// dbq reads outside a transaction.
type dbq struct {
	db *sql.DB
	d  *dialect
}

func (q dbq) QueryRow(query string, args ...any) *sql.Row {
	return q.db.QueryRow(q.d.bind(query), args...)
}
func (q dbq) Query(query string, args ...any) (*sql.Rows, error) {
	return q.db.Query(q.d.bind(query), args...)
}

func (s *DB) stamp() string { return s.now().UTC().Format(timeLayout) }

// CreateStudy returns the study called name, creating it with direction d
// and userAttrs when it does not exist. An existing study with another
// direction is an error; its user attributes are left as they are.
func (s *DB) CreateStudy(ctx context.Context, name string, d Direction, userAttrs map[string]any) (Study, error) {
	var st Study
	err := s.tx(ctx, func(tx tx) error {
		var id int64
		// Insert-if-absent in one statement, so creators racing on another
		// machine cannot both create it.
		err := tx.QueryRow(`INSERT INTO studies (study_name) VALUES (?) ON CONFLICT (study_name) DO NOTHING RETURNING study_id`, name).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows): // it exists
			if err := tx.QueryRow(`SELECT study_id FROM studies WHERE study_name = ?`, name).Scan(&id); err != nil {
				return err
			}
		case err != nil:
			return err
		default: // created
			if _, err := tx.Exec(`INSERT INTO study_directions (direction, study_id, objective) VALUES (?, ?, 0)`, d.String(), id); err != nil {
				return err
			}
			for k, v := range userAttrs {
				js, err := marshalAttr(v)
				if err != nil {
					return fmt.Errorf("user attr %q: %w", k, err)
				}
				if _, err := tx.Exec(`INSERT INTO study_user_attributes (study_id, "key", value_json) VALUES (?, ?, ?)`, id, k, js); err != nil {
					return err
				}
			}
		}
		var err2 error
		st, err2 = loadStudy(tx, id)
		return err2
	})
	if err != nil {
		return Study{}, fmt.Errorf("storage: create study %q: %w", name, err)
	}
	if st.Direction != d {
		return st, fmt.Errorf("storage: study %q exists with direction %s, not %s", name, st.Direction, d)
	}
	return st, nil
}

type querier interface {
	QueryRow(query string, args ...any) *sql.Row
	Query(query string, args ...any) (*sql.Rows, error)
}

func loadStudy(q querier, id int64) (Study, error) {
	st := Study{ID: id, UserAttrs: map[string]any{}}
	var dir string
	err := q.QueryRow(`SELECT s.study_name, COALESCE(d.direction, 'MINIMIZE'),
		(SELECT COUNT(*) FROM study_directions n WHERE n.study_id = s.study_id) FROM studies s
		LEFT JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0 WHERE s.study_id = ?`, id).Scan(&st.Name, &dir, &st.Objectives)
	if err != nil {
		return st, err
	}
	if dir == "MAXIMIZE" {
		st.Direction = Maximize
	}
	rows, err := q.Query(`SELECT "key", value_json FROM study_user_attributes WHERE study_id = ?`, id)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, js string
		if err := rows.Scan(&k, &js); err != nil {
			return st, err
		}
		st.UserAttrs[k] = decodeAttr(js)
	}
	return st, rows.Err()
}

// Studies returns every study, ordered by id.
func (s *DB) Studies(ctx context.Context) ([]Study, error) {
	var out []Study
	err := s.retrying(ctx, func() (err error) {
		out, err = s.studies(ctx)
		return err
	})
	return out, err
}

func (s *DB) studies(ctx context.Context) ([]Study, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT study_id FROM studies ORDER BY study_id`) // no placeholders
	if err != nil {
		return nil, fmt.Errorf("storage: list studies: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	out := make([]Study, 0, len(ids))
	for _, id := range ids {
		st, err := loadStudy(dbq{s.db, s.d}, id)
		if err != nil {
			return nil, fmt.Errorf("storage: load study %d: %w", id, err)
		}
		out = append(out, st)
	}
	return out, nil
}

// Trials returns every trial of a study, ordered by number.
func (s *DB) Trials(ctx context.Context, studyID int64) ([]FrozenTrial, error) {
	var out []FrozenTrial
	err := s.retrying(ctx, func() (err error) {
		out, err = s.trials(ctx, studyID)
		return err
	})
	return out, err
}

func (s *DB) trials(ctx context.Context, studyID int64) ([]FrozenTrial, error) {
	// One read transaction gives a consistent snapshot across the tables.
	t, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("storage: trials of study %d: %w", studyID, err)
	}
	defer t.Rollback()
	out, err := loadTrials(tx{t, s.d}, false, true, `t.study_id = ?`, studyID)
	if err != nil {
		return nil, fmt.Errorf("storage: trials of study %d: %w", studyID, err)
	}
	return out, nil
}

// Snapshot returns every study, then every trial (by study id) without
// intermediate values and attributes (their maps are nil), the trials read in one transaction
// (a study created in between has its trials and no entry in the list,
// and is simply not shown): a summary in a few bulk queries, however many
// studies there are. Trials gives a study's trials in full.
func (s *DB) Snapshot(ctx context.Context) ([]Study, map[int64][]FrozenTrial, error) {
	studies, err := s.Studies(ctx)
	if err != nil {
		return nil, nil, err
	}
	t, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("storage: snapshot: %w", err)
	}
	defer t.Rollback()
	all, err := loadTrials(tx{t, s.d}, true, false, `1 = 1`)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: snapshot: %w", err)
	}
	sizes := map[int64]int{}
	for _, tr := range all {
		sizes[tr.StudyID]++
	}
	byStudy := make(map[int64][]FrozenTrial, len(sizes))
	for id, n := range sizes {
		byStudy[id] = make([]FrozenTrial, 0, n)
	}
	for _, tr := range all {
		byStudy[tr.StudyID] = append(byStudy[tr.StudyID], tr)
	}
	for _, trials := range byStudy {
		sortByNumber(trials)
	}
	return studies, byStudy, nil
}

// ChangeToken is a cheap summary that changes whenever a study or trial is
// added, a trial changes state, or a value or intermediate value is
// written: a reader polls it and reloads only when it moves.
func (s *DB) ChangeToken(ctx context.Context) (string, error) {
	var studies, trials, running, values, inter, attrs int64
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM studies),
		(SELECT COUNT(*) FROM trials),
		(SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'),
		(SELECT COUNT(*) FROM trial_values),
		(SELECT COUNT(*) FROM trial_intermediate_values),
		(SELECT COUNT(*) FROM trial_user_attributes)`).Scan(&studies, &trials, &running, &values, &inter, &attrs)
	if err != nil {
		return "", fmt.Errorf("storage: change token: %w", err)
	}
	return fmt.Sprintf("%d.%d.%d.%d.%d.%d", studies, trials, running, values, inter, attrs), nil
}

func parseTime(v sql.NullString) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	for _, layout := range []string{timeLayout, "2006-01-02 15:04:05.999999", "2006-01-02 15:04:05", time.RFC3339Nano} {
		if t, err := time.Parse(layout, v.String); err == nil {
			return t
		}
	}
	return time.Time{}
}

// loadTrials reads the trials matching where (over alias t) with every
// dependent row, or, when light, without intermediate values and
// attributes (a summary of many trials). They come in id order, or by
// number when ordered.
func loadTrials(q querier, light, ordered bool, where string, args ...any) ([]FrozenTrial, error) {
	var n int
	if err := q.QueryRow(`SELECT COUNT(*) FROM trials t WHERE `+where, args...).Scan(&n); err != nil {
		return nil, err
	}
	// Sized once: at a paper-sized grid's 133k trials, growing the slice
	// by appends copied it a dozen times over.
	trials := make([]FrozenTrial, 0, n)
	index := make(map[int64]int, n)
	// A trial, its first objective's value and its parameters come in one
	// query, a row per parameter (one without any), consecutive per trial:
	// a row costs more than its columns, and a summary of many trials is
	// mostly rows.
	rows, err := q.Query(`SELECT t.trial_id, t.number, t.study_id, t.state, CAST(t.datetime_start AS TEXT), CAST(t.datetime_complete AS TEXT), CAST(h.heartbeat AS TEXT),
		v.value, v.value_type, p.param_name, p.param_value, p.distribution_json
		FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id
		LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
		LEFT JOIN trial_params p ON p.trial_id = t.trial_id
		WHERE `+where+` ORDER BY t.trial_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	sets := distributionSets{decoded: map[string]Distribution{}, shared: map[string]map[string]Distribution{}}
	closeTrial := func() {
		if len(trials) > 0 {
			trials[len(trials)-1].Distributions = sets.take()
		}
	}
	// Scanned into the same variables each row: Scan's pointers would
	// make a fresh set escape per row.
	var (
		id, studyID                           int64
		number                                int
		state                                 string
		start, complete, hb, valueType, param sql.NullString
		value, paramValue                     sql.NullFloat64
		dist                                  sql.RawBytes
	)
	for rows.Next() {
		if err := rows.Scan(&id, &number, &studyID, &state, &start, &complete, &hb, &value, &valueType, &param, &paramValue, &dist); err != nil {
			return nil, err
		}
		if len(trials) == 0 || trials[len(trials)-1].ID != id {
			closeTrial()
			t := FrozenTrial{ID: id, Number: number, StudyID: studyID}
			if t.State, err = ParseTrialState(state); err != nil {
				return nil, err
			}
			t.Start, t.Complete, t.Heartbeat = parseTime(start), parseTime(complete), parseTime(hb)
			if valueType.Valid {
				f := decodeValue(value, valueType.String)
				t.Value = &f
			}
			t.Params = map[string]float64{}
			if !light { // a summary's trials leave these nil: reading them works, and there are many
				t.Intermediate = map[int]float64{}
				t.UserAttrs = map[string]any{}
				t.SystemAttrs = map[string]any{}
			}
			index[id] = len(trials)
			trials = append(trials, t)
		}
		if !param.Valid {
			continue
		}
		if err := sets.add(param.String, dist); err != nil {
			return nil, fmt.Errorf("trial %d param %q: %w", id, param.String, err)
		}
		trials[len(trials)-1].Params[param.String] = paramValue.Float64
	}
	closeTrial()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if len(trials) == 0 {
		return trials, nil
	}
	sub := `trial_id IN (SELECT t.trial_id FROM trials t WHERE ` + where + `)`
	if light {
		if ordered {
			sortByNumber(trials)
		}
		return trials, nil
	}
	if err := eachRow(q, `SELECT trial_id, step, intermediate_value, intermediate_value_type FROM trial_intermediate_values WHERE `+sub, args, func(r *sql.Rows) error {
		var id int64
		var step int
		var v sql.NullFloat64
		var typ string
		if err := r.Scan(&id, &step, &v, &typ); err != nil {
			return err
		}
		trials[index[id]].Intermediate[step] = decodeValue(v, typ)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, table := range []string{"trial_user_attributes", "trial_system_attributes"} {
		user := table == "trial_user_attributes"
		if err := eachRow(q, `SELECT trial_id, "key", value_json FROM `+table+` WHERE `+sub, args, func(r *sql.Rows) error {
			var id int64
			var k, js string
			if err := r.Scan(&id, &k, &js); err != nil {
				return err
			}
			v := decodeAttr(js)
			t := &trials[index[id]]
			if user {
				t.UserAttrs[k] = v
			} else {
				t.SystemAttrs[k] = v
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if !ordered {
		return trials, nil
	}
	sortByNumber(trials)
	return trials, nil
}

// distributionSets gathers one trial's distributions at a time. A study's
// trials share a handful of distributions: each JSON text is decoded once,
// and trials that drew from the same ones share one map (read-only, like
// the rest of a loaded trial; a map per trial was most of a large
// summary's memory).
type distributionSets struct {
	decoded map[string]Distribution
	shared  map[string]map[string]Distribution
	names   []string
	dists   []Distribution
	key     []byte // the trial's names and texts so far, each length-prefixed
}

// add records the current trial's distribution of name, from its JSON.
func (s *distributionSets) add(name string, raw []byte) error {
	d, ok := s.decoded[string(raw)]
	if !ok {
		// Directly: json.Unmarshal refuses the NaN Python writes before asking it.
		if err := d.UnmarshalJSON(raw); err != nil {
			return err
		}
		s.decoded[string(raw)] = d
	}
	s.names, s.dists = append(s.names, name), append(s.dists, d)
	s.key = binary.AppendUvarint(s.key, uint64(len(name)))
	s.key = binary.AppendUvarint(append(s.key, name...), uint64(len(raw)))
	s.key = append(s.key, raw...)
	return nil
}

// take returns the current trial's distributions and starts the next.
func (s *distributionSets) take() map[string]Distribution {
	m, ok := s.shared[string(s.key)]
	if !ok {
		m = make(map[string]Distribution, len(s.names))
		for i, name := range s.names {
			m[name] = s.dists[i]
		}
		s.shared[string(s.key)] = m
	}
	s.names, s.dists, s.key = s.names[:0], s.dists[:0], s.key[:0]
	return m
}

// sortByNumber orders trials by number (then id). They are read in id
// order, which within a study is nearly always number order already: the
// check saves sorting.
func sortByNumber(trials []FrozenTrial) {
	byNumber := func(a, b FrozenTrial) int { return cmp.Or(cmp.Compare(a.Number, b.Number), cmp.Compare(a.ID, b.ID)) }
	if !slices.IsSortedFunc(trials, byNumber) {
		slices.SortStableFunc(trials, byNumber)
	}
}

func eachRow(q querier, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := q.Query(query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

func decodeValue(v sql.NullFloat64, typ string) float64 {
	switch typ {
	case "INF_POS":
		return math.Inf(1)
	case "INF_NEG":
		return math.Inf(-1)
	case "NAN":
		return math.NaN()
	}
	if !v.Valid {
		return math.NaN()
	}
	return v.Float64
}

func encodeValue(f float64) (any, string) {
	switch {
	case math.IsNaN(f):
		return nil, "NAN"
	case math.IsInf(f, 1):
		return nil, "INF_POS"
	case math.IsInf(f, -1):
		return nil, "INF_NEG"
	}
	return f, "FINITE"
}

// TrialOptions says how CreateTrial makes a trial.
type TrialOptions struct {
	// State is Running (the default) or Waiting (an enqueued trial).
	State TrialState
	// Budget, when > 0, caps the study's COMPLETE+PRUNED+RUNNING trials:
	// CreateTrial returns ErrStudyFull instead of exceeding it.
	Budget int
	// Heartbeat starts a heartbeat row, so that a dead owner is detected.
	Heartbeat bool
	// ClaimWaiting makes a Running request take the oldest WAITING trial,
	// if any, instead of a new one (Optuna's ask does the same).
	ClaimWaiting  bool
	Params        map[string]float64
	Distributions map[string]Distribution
	UserAttrs     map[string]any
	SystemAttrs   map[string]any
}

// CreateTrial adds a trial to a study (or claims a WAITING one) in one
// transaction, numbering it as Optuna does.
func (s *DB) CreateTrial(ctx context.Context, studyID int64, o TrialOptions) (FrozenTrial, error) {
	var out FrozenTrial
	err := s.tx(ctx, func(tx tx) error {
		if s.d.lockStudy != "" {
			// Creators of this study's trials queue here, on every machine.
			if _, err := tx.Exec(s.d.lockStudy, studyID); err != nil {
				return err
			}
		}
		if o.Budget > 0 && o.State == Running {
			var n int
			if err := tx.QueryRow(`SELECT count(*) FROM trials WHERE study_id = ? AND state IN ('COMPLETE','PRUNED','RUNNING')`, studyID).Scan(&n); err != nil {
				return err
			}
			if n >= o.Budget {
				return ErrStudyFull
			}
		}
		now := s.stamp()
		var id int64
		claimed := false
		if o.State == Running && o.ClaimWaiting {
			err := tx.QueryRow(`SELECT trial_id FROM trials WHERE study_id = ? AND state = 'WAITING' ORDER BY trial_id LIMIT 1`, studyID).Scan(&id)
			if err == nil {
				claimed = true
				if _, err := tx.Exec(`UPDATE trials SET state = 'RUNNING', datetime_start = ? WHERE trial_id = ?`, now, id); err != nil {
					return err
				}
			} else if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if !claimed {
			var start any = now
			if o.State == Waiting {
				start = nil
			}
			if err := tx.QueryRow(`INSERT INTO trials (number, study_id, state, datetime_start) VALUES (NULL, ?, ?, ?) RETURNING trial_id`,
				studyID, o.State.String(), start).Scan(&id); err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE trials SET number = (SELECT count(*) FROM trials WHERE study_id = ? AND trial_id < ?) WHERE trial_id = ?`, studyID, id, id); err != nil {
				return err
			}
			if err := writeTrialData(tx, id, TrialUpdate{Params: o.Params, Distributions: o.Distributions, UserAttrs: o.UserAttrs, SystemAttrs: o.SystemAttrs}); err != nil {
				return err
			}
		}
		if o.Heartbeat && o.State == Running {
			if err := heartbeat(tx, id); err != nil {
				return err
			}
		}
		trials, err := loadTrials(tx, false, false, `t.trial_id = ?`, id)
		if err != nil {
			return err
		}
		out = trials[0]
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrStudyFull) {
			return out, err
		}
		return out, fmt.Errorf("storage: create trial in study %d: %w", studyID, err)
	}
	return out, nil
}

func heartbeat(tx tx, id int64) error {
	_, err := tx.Exec(`INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, CURRENT_TIMESTAMP)
		ON CONFLICT (trial_id) DO UPDATE SET heartbeat = CURRENT_TIMESTAMP`, id)
	return err
}

// TrialUpdate is a set of changes applied to one trial at once. Zero fields
// change nothing.
type TrialUpdate struct {
	State         *TrialState // a finished state also stamps datetime_complete
	Value         *float64
	Params        map[string]float64 // internal values, each with its distribution
	Distributions map[string]Distribution
	Intermediate  map[int]float64
	UserAttrs     map[string]any
	SystemAttrs   map[string]any
	Heartbeat     bool
}

// UpdateTrial applies u in one transaction. A finished trial is immutable:
// updating one returns ErrTrialFinished and changes nothing.
func (s *DB) UpdateTrial(ctx context.Context, trialID int64, u TrialUpdate) error {
	err := s.tx(ctx, func(tx tx) error {
		var state string
		if err := tx.QueryRow(`SELECT state FROM trials WHERE trial_id = ?`, trialID).Scan(&state); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		cur, err := ParseTrialState(state)
		if err != nil {
			return err
		}
		if cur.IsFinished() {
			return ErrTrialFinished
		}
		if err := writeTrialData(tx, trialID, u); err != nil {
			return err
		}
		if u.Heartbeat {
			if err := heartbeat(tx, trialID); err != nil {
				return err
			}
		}
		if u.State != nil && *u.State != cur {
			var complete any
			if u.State.IsFinished() {
				complete = s.stamp()
			}
			start := ""
			if cur == Waiting && *u.State == Running {
				start = `, datetime_start = '` + s.stamp() + `'`
			}
			if _, err := tx.Exec(`UPDATE trials SET state = ?, datetime_complete = ?`+start+` WHERE trial_id = ?`, u.State.String(), complete, trialID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: update trial (row id %d): %w", trialID, err)
	}
	return nil
}

func writeTrialData(tx tx, id int64, u TrialUpdate) error {
	names := make([]string, 0, len(u.Params))
	for name := range u.Params {
		names = append(names, name)
	}
	sort.Strings(names) // stable param_id order, as Optuna's suggest order would be
	for _, name := range names {
		d, ok := u.Distributions[name]
		if !ok {
			return fmt.Errorf("param %q has no distribution", name)
		}
		dj, err := d.MarshalJSON() // json.Marshal would compact Optuna's spacing
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?, ?, ?, ?)
			ON CONFLICT (trial_id, param_name) DO UPDATE SET param_value = excluded.param_value, distribution_json = excluded.distribution_json`,
			id, name, u.Params[name], string(dj)); err != nil {
			return err
		}
	}
	if u.Value != nil {
		v, typ := encodeValue(*u.Value)
		if typ == "NAN" {
			return errors.New("a trial value cannot be NaN")
		}
		if _, err := tx.Exec(`INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, 0, ?, ?)
			ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type`, id, v, typ); err != nil {
			return err
		}
	}
	for step, f := range u.Intermediate {
		v, typ := encodeValue(f)
		if _, err := tx.Exec(`INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?, ?, ?, ?)
			ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type`, id, step, v, typ); err != nil {
			return err
		}
	}
	for _, attrs := range []struct {
		table string
		m     map[string]any
	}{{"trial_user_attributes", u.UserAttrs}, {"trial_system_attributes", u.SystemAttrs}} {
		for k, v := range attrs.m {
			js, err := marshalAttr(v)
			if err != nil {
				return fmt.Errorf("attr %q: %w", k, err)
			}
			if _, err := tx.Exec(`INSERT INTO `+attrs.table+` (trial_id, "key", value_json) VALUES (?, ?, ?)
				ON CONFLICT (trial_id, "key") DO UPDATE SET value_json = excluded.value_json`, id, k, js); err != nil {
				return err
			}
		}
	}
	return nil
}

// FailStaleTrials marks FAIL every RUNNING trial of the study whose heartbeat
// is older than grace by the database's clock, with a fail_reason saying
// so, and returns them as they were before the change. Trials without a heartbeat (ask/tell) are never stale.
func (s *DB) FailStaleTrials(ctx context.Context, studyID int64, grace time.Duration) ([]FrozenTrial, error) {
	var stale []FrozenTrial
	err := s.tx(ctx, func(tx tx) error {
		var err error
		stale, err = loadTrials(tx, false, true, `t.study_id = ? AND t.state = 'RUNNING' AND t.trial_id IN
			(SELECT trial_id FROM trial_heartbeats WHERE `+s.d.staleCond+`)`,
			append([]any{studyID}, s.d.staleArgs(int(math.Ceil(grace.Seconds())))...)...)
		if err != nil {
			return err
		}
		now := s.stamp()
		reason, err := marshalAttr(fmt.Sprintf("lost its process: no heartbeat for over %v (the process that ran it died or was killed)", grace))
		if err != nil {
			return err
		}
		// Another process may be reaping the same trials: under
		// PostgreSQL's READ COMMITTED both read them RUNNING. Only the
		// rows this update still finds RUNNING are this process's to fail
		// (and to retry); the other update waits on the row lock, then
		// finds them FAIL and changes nothing.
		reaped := stale[:0]
		for _, t := range stale {
			res, err := tx.Exec(`UPDATE trials SET state = 'FAIL', datetime_complete = ? WHERE trial_id = ? AND state = 'RUNNING'`, now, t.ID)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				continue
			}
			if _, err := tx.Exec(`INSERT INTO trial_user_attributes (trial_id, "key", value_json) VALUES (?, 'fail_reason', ?)
				ON CONFLICT (trial_id, "key") DO UPDATE SET value_json = excluded.value_json`, t.ID, reason); err != nil {
				return err
			}
			reaped = append(reaped, t)
		}
		stale = reaped
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: fail stale trials of study %d: %w", studyID, err)
	}
	return stale, nil
}
