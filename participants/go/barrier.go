// barrier.go: the idempotency barrier in PostgreSQL (docs/protocol.md, "The
// barrier"), in the same transaction as the handler's business change. One
// transaction per command; a transaction-scoped advisory lock on (saga,
// step) serialises two deliveries of one step across replicas, so the reads
// and writes after it need no more than READ COMMITTED.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

const barrierSchema = `
CREATE TABLE IF NOT EXISTS sqsaga_barrier (
    saga_id    TEXT   NOT NULL,
    step       TEXT   NOT NULL,
    op         TEXT   NOT NULL CHECK (op IN ('action', 'compensation')),
    outcome    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (saga_id, step, op)
);`

// Refused is a business refusal: the handler's writes are rolled back, the barrier keeps it.
type Refused struct{ Reason string }

func (r Refused) Error() string { return "refused: " + r.Reason }

// Handler runs a command's business change inside the barrier's transaction.
// It returns the output, a Refused, or any other error (transient: nothing is kept).
type Handler func(ctx context.Context, tx *sql.Tx, c *Command) (interface{}, error)

// registered is one command of a contract.
type registered struct {
	contract string
	phase    string
	handler  Handler
}

// Registry holds the handlers by command name.
type Registry struct {
	commands      map[string]registered
	compensations map[string]string // action -> its compensation, for seed messages
	contracts     map[string]bool
}

func newRegistry() *Registry {
	return &Registry{commands: map[string]registered{}, compensations: map[string]string{}, contracts: map[string]bool{}}
}

// Register adds action (and its compensation when it has one) under contract.
func (r *Registry) Register(contract, action string, h Handler, compensation string, undo Handler) {
	r.contracts[contract] = true
	r.commands[action] = registered{contract, "action", h}
	if compensation != "" {
		r.commands[compensation] = registered{contract, "compensation", undo}
		r.compensations[action] = compensation
	}
}

// errDatabase marks a failure of the database itself: nothing is replied,
// the message comes back after its visibility timeout.
type errDatabase struct{ err error }

func (e errDatabase) Error() string { return "participant database: " + e.err.Error() }

// Barrier runs commands in PostgreSQL.
type Barrier struct {
	db *sql.DB
}

func (b *Barrier) row(ctx context.Context, tx *sql.Tx, c *Command, op string) (*Outcome, error) {
	var text string
	err := tx.QueryRowContext(ctx, `SELECT outcome FROM sqsaga_barrier WHERE saga_id = $1 AND step = $2 AND op = $3`,
		c.SagaID, c.StepName, op).Scan(&text)
	if err == sql.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var o Outcome
	if err := json.Unmarshal([]byte(text), &o); err != nil {
		return nil, fmt.Errorf("barrier row of %s/%s/%s is not an outcome: %v", c.SagaID, c.StepName, op, err)
	}
	return &o, nil
}

func (b *Barrier) write(ctx context.Context, tx *sql.Tx, c *Command, op string, o Outcome, now time.Time) error {
	text, err := json.Marshal(o)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sqsaga_barrier (saga_id, step, op, outcome, created_at) VALUES ($1, $2, $3, $4, $5)`,
		c.SagaID, c.StepName, op, string(text), now.UnixMilli())
	return err
}

// Run runs c through the barrier with handler h (nil for a fence) and
// returns the outcome to reply. A transient handler error is returned as a
// `transient` outcome with nothing committed; an errDatabase means nothing
// is known to be durable.
func (b *Barrier) Run(ctx context.Context, c *Command, h Handler, now time.Time) (Outcome, error) {
	tx, err := b.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return Outcome{}, errDatabase{err}
	}
	defer tx.Rollback() //nolint:errcheck // after a commit, a no-op
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))`, c.SagaID, c.StepName); err != nil {
		return Outcome{}, errDatabase{err}
	}
	outcome, keep, err := b.decide(ctx, tx, c, h, now)
	if err != nil {
		return Outcome{}, err
	}
	if !keep {
		return outcome, nil // rolled back by the deferred Rollback
	}
	if err := tx.Commit(); err != nil {
		return Outcome{}, errDatabase{err}
	}
	return outcome, nil
}

// decide applies the barrier's rules inside tx; keep says whether to commit.
func (b *Barrier) decide(ctx context.Context, tx *sql.Tx, c *Command, h Handler, now time.Time) (Outcome, bool, error) {
	action, err := b.row(ctx, tx, c, "action")
	if err != nil {
		return Outcome{}, false, errDatabase{err}
	}
	if c.Phase == "action" {
		if action != nil {
			if action.Kind == "prevented" {
				return refused("compensated before the action ran"), false, nil
			}
			return *action, false, nil // duplicate
		}
		if c.NotAfter != nil && now.UnixMilli() > *c.NotAfter {
			o := refused(fmt.Sprintf("expired in queue: received %dms after its latest start", now.UnixMilli()-*c.NotAfter))
			return o, true, dbErr(b.write(ctx, tx, c, "action", o, now))
		}
		o, keep, err := b.runHandler(ctx, tx, c, h)
		if err != nil || !keep {
			return o, false, err
		}
		return o, true, dbErr(b.write(ctx, tx, c, "action", o, now))
	}
	comp, err := b.row(ctx, tx, c, "compensation")
	if err != nil {
		return Outcome{}, false, errDatabase{err}
	}
	if comp != nil {
		return *comp, false, nil // duplicate
	}
	fence := c.Command == fenceCommand
	nothing := json.RawMessage("null")
	if fence {
		nothing = json.RawMessage(`{"fence":"prevented"}`)
	}
	switch {
	case action == nil: // null compensation (or fence first): the action must never run
		if err := b.write(ctx, tx, c, "action", Outcome{Kind: "prevented"}, now); err != nil {
			return Outcome{}, false, errDatabase{err}
		}
		o := succeeded(nothing)
		return o, true, dbErr(b.write(ctx, tx, c, "compensation", o, now))
	case action.Kind != "succeeded": // refused or prevented: nothing to undo
		o := succeeded(nothing)
		return o, true, dbErr(b.write(ctx, tx, c, "compensation", o, now))
	case fence:
		out, _ := json.Marshal(map[string]json.RawMessage{"fence": json.RawMessage(`"already_ran"`), "output": rawOr(action.Output)})
		o := succeeded(out)
		return o, true, dbErr(b.write(ctx, tx, c, "compensation", o, now))
	}
	o, keep, err := b.runHandler(ctx, tx, c, h)
	if err != nil || !keep || o.Kind != "succeeded" {
		return o, false, err // a refused compensation writes nothing: a resume must be able to run it again
	}
	return o, true, dbErr(b.write(ctx, tx, c, "compensation", o, now))
}

// runHandler runs h under a savepoint: a refusal keeps none of its writes
// (keep=true: the barrier records it), a transient error keeps nothing.
func (b *Barrier) runHandler(ctx context.Context, tx *sql.Tx, c *Command, h Handler) (Outcome, bool, error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT handler`); err != nil {
		return Outcome{}, false, errDatabase{err}
	}
	output, err := h(ctx, tx, c)
	if refusal, ok := err.(Refused); ok {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT handler`); err != nil {
			return Outcome{}, false, errDatabase{err}
		}
		return refused(refusal.Reason), true, nil
	}
	if err != nil {
		return Outcome{Kind: "transient", Error: err.Error()}, false, nil
	}
	out, err := json.Marshal(output)
	if err != nil {
		return Outcome{Kind: "transient", Error: fmt.Sprintf("output is not JSON: %v", err)}, false, nil
	}
	return succeeded(out), true, nil
}

func rawOr(r json.RawMessage) json.RawMessage {
	if len(r) == 0 {
		return json.RawMessage("null")
	}
	return r
}

func dbErr(err error) error {
	if err != nil {
		return errDatabase{err}
	}
	return nil
}
