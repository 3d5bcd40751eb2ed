// Package storage keeps studies and trials in Optuna's relational schema, so
// that Optuna, optuna-dashboard and the sweep CLI all read the same file.
//
// # Schema
//
// The tables, encodings and revision stamp are those Optuna 3.2 through 5.0
// write (alembic revision v3.2.0.a, schema version 12): trial states by
// name, parameters in their internal representation beside Optuna's
// distribution JSON, infinite and NaN values as NULL plus a value type,
// attributes as JSON text, datetimes as naive UTC with microseconds, and one
// heartbeat row per running trial stamped by the database clock.
//
// # Invariants
//
// Every change is one transaction. Trial numbers are 0..n-1 within a study
// in creation order, also when several processes add trials at once.
// Finished trials (COMPLETE, PRUNED, FAIL) never change again. Values
// returned by a Storage are copies.
package storage

import (
	"context"
	"io"
	"time"
)

// Storage is what the orchestrator, samplers and CLI need of a database.
// Implementations are safe for concurrent use. Derived queries (BestTrial,
// Count) are functions over the trials it returns.
type Storage interface {
	// CreateStudy gets or creates the study called name.
	CreateStudy(ctx context.Context, name string, d Direction, userAttrs map[string]any) (Study, error)
	Studies(ctx context.Context) ([]Study, error)
	// Trials returns every trial of the study ordered by number.
	Trials(ctx context.Context, studyID int64) ([]FrozenTrial, error)
	CreateTrial(ctx context.Context, studyID int64, o TrialOptions) (FrozenTrial, error)
	UpdateTrial(ctx context.Context, trialID int64, u TrialUpdate) error
	// FailStaleTrials fails RUNNING trials whose heartbeat is older than grace.
	FailStaleTrials(ctx context.Context, studyID int64, grace time.Duration) ([]FrozenTrial, error)
	io.Closer
}

var _ Storage = (*DB)(nil)
