package storage

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgservicefile"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// dialect is what differs between the SQL engines the storage speaks.
// Queries are written with ? placeholders and standard SQL otherwise
// (INSERT … ON CONFLICT, RETURNING), which both engines accept.
type dialect struct {
	name     string
	ddl      string
	numbered bool // placeholders are $1, $2, …
	// initLock serialises schema creation between processes ("" for none).
	initLock string
	// lockStudy serialises the creation of a study's trials ("" when the
	// transaction itself holds the database's write lock, as SQLite's
	// immediate transactions do).
	lockStudy string
	// staleCond selects heartbeats older than a number of seconds given by
	// staleArgs.
	staleCond string
	staleArgs func(seconds int) []any
}

var sqliteDialect = &dialect{
	name:      "sqlite",
	ddl:       sqliteDDL,
	staleCond: `heartbeat < datetime('now', ?)`,
	staleArgs: func(sec int) []any { return []any{fmt.Sprintf("-%d seconds", sec)} },
}

var postgresDialect = &dialect{
	name:      "postgres",
	ddl:       postgresDDL,
	numbered:  true,
	initLock:  `SELECT pg_advisory_xact_lock(20230524)`,
	lockStudy: `SELECT study_id FROM studies WHERE study_id = ? FOR UPDATE`,
	// The session runs in UTC (OpenPostgres), so timestamps compare as stored.
	// A server that restarted less than a grace ago has not been there
	// to receive the heartbeats: none is judged stale until it has.
	staleCond: `heartbeat < LOCALTIMESTAMP - make_interval(secs => ?) AND pg_postmaster_start_time() < now() - make_interval(secs => ?)`,
	staleArgs: func(sec int) []any { return []any{sec, sec} },
}

// bind rewrites ? placeholders to the engine's.
func (d *dialect) bind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// conflict reports a serialisation failure or deadlock: the server
// answered, another transaction was in the way.
func (d *dialect) conflict(err error) bool {
	var pe *pgconn.PgError
	return d.name == "postgres" && errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// retryable reports errors after which a transaction may simply run again:
// a lost connection, or (PostgreSQL) a serialisation failure or deadlock.
func (d *dialect) retryable(err error) bool {
	if d.name != "postgres" {
		return false
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return false // a host name that does not exist is a mistake, not an outage
	}
	if errors.Is(err, driver.ErrBadConn) || pgconn.SafeToRetry(err) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 57P01-57P03: the server is shutting down, crashed, or not yet
		// accepting connections: what a restart looks like.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "40001" || pe.Code == "40P01" || strings.HasPrefix(pe.Code, "57P0")
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// OpenPostgres opens a PostgreSQL database by URL
// (postgresql://user:password@host:port/db), creating Optuna's tables when
// they are missing. The session runs in UTC, as the stored naive datetimes
// are.
func OpenPostgres(rawURL string) (*DB, error) { return openPostgres(rawURL, false, Outages{}) }

func openPostgres(rawURL string, readOnly bool, o Outages) (*DB, error) {
	shown := Redact(rawURL)
	u, err := url.Parse(rawURL)
	// An @ outside the parsed user information, or a fragment, means a
	// password holding / ? # or @ was read as host, path or fragment: the
	// server would get a wrong name, and its errors would print the rest.
	if err == nil && (u.Fragment != "" || strings.Contains(u.Host+u.Path+u.RawQuery, "@")) {
		err = errors.New("misread")
	}
	if err != nil {
		// url.Error and its detail ("invalid port :S3K") repeat pieces of
		// the password: say what to do instead.
		return nil, fmt.Errorf("storage: %s is not a valid URL: characters such as / ? # @ %% ; in the password must be percent-encoded (%%2F %%3F %%23 %%40 %%25 %%3B), or the password kept in PGPASSWORD", shown)
	}
	if strings.Contains(u.RawQuery, ";") {
		// Go's query parser drops such a parameter whole, password and all.
		return nil, fmt.Errorf("storage: %s: a ';' in the URL's parameters must be percent-encoded (%%3B)", shown)
	}
	u.Scheme = "postgresql" // pgx knows neither postgresql+psycopg2 nor upper case
	q := u.Query()
	if err := checkServiceFile(q); err != nil {
		return nil, fmt.Errorf("storage: %s: %w", shown, err)
	}
	if q.Get("timezone") == "" {
		q.Set("timezone", "UTC")
	}
	if readOnly {
		q.Set("default_transaction_read_only", "on")
	}
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		return nil, redactedError(fmt.Errorf("storage: open %s: %w", shown, err))
	}
	db.SetMaxOpenConns(8)
	s := &DB{db: db, path: shown, now: time.Now, d: postgresDialect, readOnly: readOnly, outages: o}
	// A server that is restarting refuses connections for a while: a
	// worker started then waits for it as long as it would mid-sweep.
	err = s.retrying(context.Background(), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return db.PingContext(ctx)
	})
	if err != nil {
		db.Close()
		return nil, redactedError(fmt.Errorf("storage: connect to %s: %w", shown, err))
	}
	check := s.init
	if readOnly {
		check = s.checkSchema
	}
	if err := check(); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", shown, err)
	}
	return s, nil
}

// postgresDDL is Optuna's RDB schema on PostgreSQL, with its enum columns
// as VARCHAR (SQLAlchemy reads and writes both alike).
const postgresDDL = `
CREATE TABLE IF NOT EXISTS studies (
	study_id SERIAL PRIMARY KEY,
	study_name VARCHAR(512) NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_studies_study_name ON studies (study_name);
CREATE TABLE IF NOT EXISTS version_info (
	version_info_id INTEGER PRIMARY KEY CHECK (version_info_id=1),
	schema_version INTEGER,
	library_version VARCHAR(256)
);
CREATE TABLE IF NOT EXISTS study_directions (
	study_direction_id SERIAL PRIMARY KEY,
	direction VARCHAR(8) NOT NULL,
	study_id INTEGER NOT NULL REFERENCES studies (study_id),
	objective INTEGER NOT NULL,
	UNIQUE (study_id, objective)
);
CREATE TABLE IF NOT EXISTS study_user_attributes (
	study_user_attribute_id SERIAL PRIMARY KEY,
	study_id INTEGER REFERENCES studies (study_id),
	"key" VARCHAR(512),
	value_json TEXT,
	UNIQUE (study_id, "key")
);
CREATE TABLE IF NOT EXISTS study_system_attributes (
	study_system_attribute_id SERIAL PRIMARY KEY,
	study_id INTEGER REFERENCES studies (study_id),
	"key" VARCHAR(512),
	value_json TEXT,
	UNIQUE (study_id, "key")
);
CREATE TABLE IF NOT EXISTS trials (
	trial_id SERIAL PRIMARY KEY,
	number INTEGER,
	study_id INTEGER REFERENCES studies (study_id),
	state VARCHAR(8) NOT NULL,
	datetime_start TIMESTAMP,
	datetime_complete TIMESTAMP
);
CREATE INDEX IF NOT EXISTS ix_trials_study_id ON trials (study_id);
CREATE TABLE IF NOT EXISTS trial_user_attributes (
	trial_user_attribute_id SERIAL PRIMARY KEY,
	trial_id INTEGER REFERENCES trials (trial_id),
	"key" VARCHAR(512),
	value_json TEXT,
	UNIQUE (trial_id, "key")
);
CREATE TABLE IF NOT EXISTS trial_system_attributes (
	trial_system_attribute_id SERIAL PRIMARY KEY,
	trial_id INTEGER REFERENCES trials (trial_id),
	"key" VARCHAR(512),
	value_json TEXT,
	UNIQUE (trial_id, "key")
);
CREATE TABLE IF NOT EXISTS trial_params (
	param_id SERIAL PRIMARY KEY,
	trial_id INTEGER REFERENCES trials (trial_id),
	param_name VARCHAR(512),
	param_value DOUBLE PRECISION,
	distribution_json TEXT,
	UNIQUE (trial_id, param_name)
);
CREATE TABLE IF NOT EXISTS trial_values (
	trial_value_id SERIAL PRIMARY KEY,
	trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
	objective INTEGER NOT NULL,
	value DOUBLE PRECISION,
	value_type VARCHAR(7) NOT NULL,
	UNIQUE (trial_id, objective)
);
CREATE TABLE IF NOT EXISTS trial_intermediate_values (
	trial_intermediate_value_id SERIAL PRIMARY KEY,
	trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
	step INTEGER NOT NULL,
	intermediate_value DOUBLE PRECISION,
	intermediate_value_type VARCHAR(7) NOT NULL,
	UNIQUE (trial_id, step)
);
CREATE TABLE IF NOT EXISTS trial_heartbeats (
	trial_heartbeat_id SERIAL PRIMARY KEY,
	trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
	heartbeat TIMESTAMP NOT NULL,
	UNIQUE (trial_id)
);
CREATE TABLE IF NOT EXISTS alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
`

// checkServiceFile reads the PostgreSQL service file a URL's service
// (or PGSERVICE) names, where pgx would, to say which file and line is
// wrong: pgx's own error names neither. Its lines may hold a password, so
// no line is quoted.
func checkServiceFile(q url.Values) error {
	service := cmp.Or(q.Get("service"), os.Getenv("PGSERVICE"))
	if service == "" {
		return nil
	}
	path := cmp.Or(q.Get("servicefile"), os.Getenv("PGSERVICEFILE"))
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return fmt.Errorf("service %q: no service file: set PGSERVICEFILE (%v)", service, err)
		}
		path = filepath.Join(home, ".pg_service.conf")
	}
	f, err := pgservicefile.ReadServicefile(path)
	if err != nil {
		return fmt.Errorf("service %q: service file %s: %v", service, path, err)
	}
	if _, err := f.GetService(service); err != nil {
		return fmt.Errorf("service %q is not in the service file %s", service, path)
	}
	return nil
}
