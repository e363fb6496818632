// handlers.go: the business of this participant, two contracts in its own
// PostgreSQL database: conformance/v1 (a counter per key, what `sqsaga
// conformance` checks) and payment/v1 (the order saga's payment service:
// charge moves `amount` cents from `account` to the merchant, refund moves
// them back). Handlers run inside the barrier's transaction and never check
// for duplicates themselves.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"math"
)

const businessSchema = `
CREATE TABLE IF NOT EXISTS conformance_counters (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS charges (
    order_id TEXT PRIMARY KEY,
    account  TEXT NOT NULL,
    amount   BIGINT NOT NULL CHECK (amount > 0),
    status   TEXT NOT NULL CHECK (status IN ('charged', 'refunded'))
);
CREATE TABLE IF NOT EXISTS merchant (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    balance BIGINT NOT NULL
);
INSERT INTO merchant (id, balance) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;`

func text(input map[string]interface{}, name string) (string, error) {
	v, ok := input[name].(string)
	if !ok || v == "" {
		return "", Refused{fmt.Sprintf("input.%s must be a non-empty string", name)}
	}
	return v, nil
}

func integer(input map[string]interface{}, name string, required bool) (int64, error) {
	raw, present := input[name]
	if !present || raw == nil {
		if required {
			return 0, Refused{fmt.Sprintf("input.%s is required", name)}
		}
		return 0, nil
	}
	f, ok := raw.(float64)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, Refused{fmt.Sprintf("input.%s must be an integer", name)}
	}
	return int64(f), nil
}

func register(r *Registry) {
	r.Register("conformance/v1", "conformance.apply", conformanceApply, "conformance.undo", conformanceUndo)
	r.Register("conformance/v1", "conformance.read", conformanceRead, "", nil)
	r.Register("payment/v1", "payment.charge", paymentCharge, "payment.refund", paymentRefund)
}

func counter(ctx context.Context, tx *sql.Tx, key string, delta int64) (interface{}, error) {
	var value int64
	err := tx.QueryRowContext(ctx, `INSERT INTO conformance_counters (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = conformance_counters.value + EXCLUDED.value RETURNING value`,
		key, delta).Scan(&value)
	if err != nil {
		return nil, err
	}
	return map[string]interface{}{"key": key, "value": value}, nil
}

// keyAmount reads the `key` and `amount` of a conformance/v1 input.
func keyAmount(input map[string]interface{}) (string, int64, error) {
	key, err := text(input, "key")
	if err != nil {
		return "", 0, err
	}
	amount, err := integer(input, "amount", false)
	return key, amount, err
}

func conformanceApply(ctx context.Context, tx *sql.Tx, c *Command) (interface{}, error) {
	input := c.Input()
	key, amount, err := keyAmount(input)
	if err != nil {
		return nil, err
	}
	if reason, ok := input["refuse"].(string); ok {
		return nil, Refused{reason}
	}
	if below, err := integer(input, "transient_below_attempt", false); err == nil && below > 0 && c.Attempt < below {
		return nil, fmt.Errorf("conformance/v1: transient failure requested for attempts below %d (this is attempt %d)", below, c.Attempt)
	}
	return counter(ctx, tx, key, amount)
}

func conformanceUndo(ctx context.Context, tx *sql.Tx, c *Command) (interface{}, error) {
	key, amount, err := keyAmount(c.Input())
	if err != nil {
		return nil, err
	}
	return counter(ctx, tx, key, -amount)
}

func conformanceRead(ctx context.Context, tx *sql.Tx, c *Command) (interface{}, error) {
	key, err := text(c.Input(), "key")
	if err != nil {
		return nil, err
	}
	var value int64
	err = tx.QueryRowContext(ctx, `SELECT value FROM conformance_counters WHERE key = $1`, key).Scan(&value)
	if err != nil && err != sql.ErrNoRows {
		return nil, err
	}
	return map[string]interface{}{"key": key, "value": value}, nil
}

func paymentCharge(ctx context.Context, tx *sql.Tx, c *Command) (interface{}, error) {
	input := c.Input()
	orderID, err := text(input, "order_id")
	if err != nil {
		return nil, err
	}
	account, err := text(input, "account")
	if err != nil {
		return nil, err
	}
	cents, err := integer(input, "amount", true)
	if err != nil {
		return nil, err
	}
	if cents <= 0 {
		return nil, Refused{"input.amount must be positive"}
	}
	var status string
	switch err := tx.QueryRowContext(ctx, `SELECT status FROM charges WHERE order_id = $1`, orderID).Scan(&status); {
	case err == nil:
		return nil, Refused{fmt.Sprintf("order %s already has a charge (%s)", orderID, status)}
	case err != sql.ErrNoRows:
		return nil, err
	}
	var balance int64
	switch err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE account = $1 FOR UPDATE`, account).Scan(&balance); {
	case err == sql.ErrNoRows:
		return nil, Refused{fmt.Sprintf("card declined: unknown account %s", account)}
	case err != nil:
		return nil, err
	}
	if balance < cents {
		return nil, Refused{"card declined: insufficient funds"}
	}
	if err := execAll(ctx, tx, []statement{
		{`UPDATE accounts SET balance = balance - $1 WHERE account = $2`, []interface{}{cents, account}},
		{`UPDATE merchant SET balance = balance + $1 WHERE id = 1`, []interface{}{cents}},
		{`INSERT INTO charges (order_id, account, amount, status) VALUES ($1, $2, $3, 'charged')`, []interface{}{orderID, account, cents}},
	}); err != nil {
		return nil, err
	}
	return map[string]interface{}{"charge": orderID, "amount": cents}, nil
}

func paymentRefund(ctx context.Context, tx *sql.Tx, c *Command) (interface{}, error) {
	orderID, err := text(c.Input(), "order_id")
	if err != nil {
		return nil, err
	}
	var account string
	var cents int64
	err = tx.QueryRowContext(ctx, `SELECT account, amount FROM charges WHERE order_id = $1 AND status = 'charged'`, orderID).Scan(&account, &cents)
	if err == sql.ErrNoRows {
		return map[string]interface{}{"refunded": 0}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := execAll(ctx, tx, []statement{
		{`UPDATE merchant SET balance = balance - $1 WHERE id = 1`, []interface{}{cents}},
		{`UPDATE accounts SET balance = balance + $1 WHERE account = $2`, []interface{}{cents, account}},
		{`UPDATE charges SET status = 'refunded' WHERE order_id = $1`, []interface{}{orderID}},
	}); err != nil {
		return nil, err
	}
	return map[string]interface{}{"refunded": cents}, nil
}

// statement is one SQL statement with its arguments.
type statement struct {
	sql  string
	args []interface{}
}

func execAll(ctx context.Context, tx *sql.Tx, statements []statement) error {
	for _, s := range statements {
		if _, err := tx.ExecContext(ctx, s.sql, s.args...); err != nil {
			return err
		}
	}
	return nil
}
