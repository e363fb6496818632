// protocol.go: the sqsaga wire protocol v1 as a participant reads and writes
// it (docs/protocol.md): decoding a received body into a command (or the
// seed's shape), the reply body, the signature's canonical form and HMAC,
// and the reply's trace context. No IO here.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	attrSignature   = "sqsaga-signature"
	attrTraceparent = "traceparent"
	attrDlqReason   = "sqsaga-dlq-reason"
	attrDlqSource   = "sqsaga-dlq-source"
	fenceCommand    = "sqsaga.fence"
)

// Command is one attempt of one step's action or compensation. Unknown
// fields are ignored (tolerant reader, as the protocol recommends).
type Command struct {
	CommandID string          `json:"command_id"`
	SagaID    string          `json:"saga_id"`
	Saga      string          `json:"saga"`
	Step      int64           `json:"step"`
	StepName  string          `json:"step_name"`
	Command   string          `json:"command"`
	Phase     string          `json:"phase"`
	Attempt   int64           `json:"attempt"`
	Contract  string          `json:"contract"`
	Payload   json.RawMessage `json:"payload"`
	NotAfter  *int64          `json:"not_after"`
	ReplyTo   string          `json:"reply_to"`
	// Seed is set for a message of the seed's shape (no `type`, no reply).
	Seed bool `json:"-"`
}

// seedMessage is the shape the seed's services put on queues before sqsaga.
type seedMessage struct {
	SagaID         string          `json:"saga_id"`
	Step           string          `json:"step"`
	Payload        json.RawMessage `json:"payload"`
	IsCompensating bool            `json:"is_compensating"`
}

// poison is a message that can never be processed: it goes to the DLQ with the reason.
type poison struct{ reason string }

func (p poison) Error() string { return p.reason }

// decode reads a received body: a v1 command, or a seed message (mapped onto
// a command with Seed set, `compensations` naming each action's compensation).
func decode(body string, compensations map[string]string) (*Command, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &fields); err != nil {
		return nil, poison{fmt.Sprintf("undecodable body: body is not a JSON object: %v", err)}
	}
	if v, ok := fields["protocol"]; ok && strings.TrimSpace(string(v)) != "1" {
		return nil, poison{fmt.Sprintf("undecodable body: protocol version %s is not supported (this participant speaks version 1; absent means 1)", v)}
	}
	if rawType, ok := fields["type"]; ok {
		var kind string
		if err := json.Unmarshal(rawType, &kind); err != nil || kind != "command" {
			return nil, poison{fmt.Sprintf("not a worker command: a %s message is not meant for this queue", rawType)}
		}
		var c Command
		if err := json.Unmarshal([]byte(body), &c); err != nil {
			return nil, poison{fmt.Sprintf("not a worker command: %v", err)}
		}
		if c.CommandID == "" || c.SagaID == "" || c.StepName == "" || c.Command == "" || c.ReplyTo == "" ||
			c.Attempt < 1 || (c.Phase != "action" && c.Phase != "compensation") {
			return nil, poison{"not a worker command: command_id, saga_id, step_name, command, phase, attempt and reply_to are required"}
		}
		return &c, nil
	}
	var s seedMessage
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.SagaID == "" || s.Step == "" {
		return nil, poison{"not a worker command: neither an sqsaga command nor a seed message"}
	}
	c := &Command{SagaID: s.SagaID, StepName: s.Step, Command: s.Step, Phase: "action", Attempt: 1, Payload: s.Payload, Seed: true}
	if s.IsCompensating {
		c.Phase = "compensation"
		c.Command = compensations[s.Step]
		if c.Command == "" {
			return nil, poison{fmt.Sprintf("unknown command `%s` (no compensation registered)", s.Step)}
		}
	}
	return c, nil
}

// Input is the saga input of a command: payload.input, or the whole payload (seed).
func (c *Command) Input() map[string]interface{} {
	var payload map[string]interface{}
	_ = json.Unmarshal(c.Payload, &payload)
	if input, ok := payload["input"].(map[string]interface{}); ok && !c.Seed {
		return input
	}
	if payload == nil {
		return map[string]interface{}{}
	}
	return payload
}

// Outcome is the outcome of a command, as barrier rows and replies carry it.
type Outcome struct {
	Kind   string          `json:"kind"`
	Output json.RawMessage `json:"output,omitempty"`
	Reason string          `json:"reason,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// MarshalJSON writes `output` for succeeded outcomes even when it is null.
func (o Outcome) MarshalJSON() ([]byte, error) {
	switch o.Kind {
	case "succeeded":
		out := o.Output
		if len(out) == 0 {
			out = json.RawMessage("null")
		}
		return json.Marshal(struct {
			Kind   string          `json:"kind"`
			Output json.RawMessage `json:"output"`
		}{o.Kind, out})
	case "refused":
		return json.Marshal(struct {
			Kind   string `json:"kind"`
			Reason string `json:"reason"`
		}{o.Kind, o.Reason})
	case "transient":
		return json.Marshal(struct {
			Kind  string `json:"kind"`
			Error string `json:"error"`
		}{o.Kind, o.Error})
	default:
		return json.Marshal(struct {
			Kind string `json:"kind"`
		}{o.Kind})
	}
}

func succeeded(output json.RawMessage) Outcome { return Outcome{Kind: "succeeded", Output: output} }
func refused(reason string) Outcome            { return Outcome{Kind: "refused", Reason: reason} }

// replyBody is the reply to c with outcome o.
func replyBody(c *Command, o Outcome, service, instance string, now time.Time) (string, error) {
	b, err := json.Marshal(struct {
		Type      string  `json:"type"`
		CommandID string  `json:"command_id"`
		SagaID    string  `json:"saga_id"`
		Step      int64   `json:"step"`
		Phase     string  `json:"phase"`
		Attempt   int64   `json:"attempt"`
		Outcome   Outcome `json:"outcome"`
		Worker    struct {
			Service     string `json:"service"`
			Instance    string `json:"instance"`
			Fingerprint string `json:"fingerprint"`
		} `json:"worker"`
		RepliedAt int64 `json:"replied_at"`
	}{Type: "reply", CommandID: c.CommandID, SagaID: c.SagaID, Step: c.Step, Phase: c.Phase, Attempt: c.Attempt,
		Outcome: o, Worker: struct {
			Service     string `json:"service"`
			Instance    string `json:"instance"`
			Fingerprint string `json:"fingerprint"`
		}{service, instance, "unknown"}, RepliedAt: now.UnixMilli()})
	return string(b), err
}

// Signer signs and verifies the sqsaga-signature attribute (HMAC-SHA256).
type Signer struct {
	keys    map[string][]byte // key id -> key: the current one, and during a rotation the previous one
	current string
	require bool
	maxAge  time.Duration
}

func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])[:8]
}

func newSigner(key, previous string, require bool, maxAge time.Duration) *Signer {
	if key == "" {
		return nil
	}
	s := &Signer{keys: map[string][]byte{}, current: keyID([]byte(key)), require: require, maxAge: maxAge}
	s.keys[s.current] = []byte(key)
	if previous != "" {
		s.keys[keyID([]byte(previous))] = []byte(previous)
	}
	return s
}

// canonical is the signed text: nine `name=<JSON string>` lines.
func canonical(body string, t int64) string {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal([]byte(body), &fields)
	text := func(name string) string {
		raw, ok := fields[name]
		if !ok || string(raw) == "null" {
			return ""
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		var compact bytes.Buffer
		if json.Compact(&compact, raw) == nil {
			return compact.String()
		}
		return string(raw)
	}
	kind := text("type")
	if _, hasType := fields["type"]; !hasType {
		if _, hasSaga := fields["saga_id"]; hasSaga {
			kind = "seed"
		}
	}
	phase := text("phase")
	if raw, ok := fields["is_compensating"]; ok {
		if strings.TrimSpace(string(raw)) == "true" {
			phase = "compensation"
		} else {
			phase = "action"
		}
	}
	sum := sha256.Sum256([]byte(body))
	lines := [][2]string{
		{"sqsaga-signature", "v1"}, {"kind", kind}, {"saga_id", text("saga_id")}, {"command_id", text("command_id")},
		{"step", text("step")}, {"phase", phase}, {"attempt", text("attempt")}, {"t", strconv.FormatInt(t, 10)},
		{"body_sha256", hex.EncodeToString(sum[:])},
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l[0])
		b.WriteString("=")
		b.WriteString(jsonString(l[1]))
		b.WriteString("\n")
	}
	return b.String()
}

// jsonString quotes s as JSON does, without HTML escaping.
func jsonString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(buf.String(), "\n")
}

func mac(key []byte, text string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(text))
	return hex.EncodeToString(m.Sum(nil))
}

// Sign returns the attribute for body signed at now.
func (s *Signer) Sign(body string, now time.Time) string {
	t := now.UnixMilli()
	return fmt.Sprintf("v1,t=%d,k=%s,s=%s", t, s.current, mac(s.keys[s.current], canonical(body, t)))
}

// Verify checks attr (empty: absent) on body; an error is final (dead-letter).
func (s *Signer) Verify(body, attr string, now time.Time) error {
	if attr == "" {
		if s.require {
			return fmt.Errorf("signature check failed: the message is not signed and signatures are required")
		}
		return nil
	}
	rest := strings.TrimPrefix(attr, "v1,")
	if rest == attr {
		return fmt.Errorf("signature check failed: forged or altered message: unknown signature format")
	}
	var t int64
	var k, sig string
	seen := map[string]bool{}
	for _, part := range strings.Split(rest, ",") {
		name, value, ok := strings.Cut(part, "=")
		if !ok || seen[name] {
			return fmt.Errorf("signature check failed: forged or altered message: malformed attribute")
		}
		seen[name] = true
		switch name {
		case "t":
			v, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return fmt.Errorf("signature check failed: forged or altered message: bad t")
			}
			t = v
		case "k":
			k = value
		case "s":
			sig = value
		default:
			return fmt.Errorf("signature check failed: forged or altered message: unknown field %q", name)
		}
	}
	key, ok := s.keys[k]
	if !ok || len(sig) != 64 {
		return fmt.Errorf("signature check failed: forged or altered message: unknown key id %q", k)
	}
	if !hmac.Equal([]byte(mac(key, canonical(body, t))), []byte(strings.ToLower(sig))) {
		return fmt.Errorf("signature check failed: forged or altered message: the signature does not match")
	}
	age := now.UnixMilli() - t
	if age < 0 {
		age = -age
	}
	if time.Duration(age)*time.Millisecond > s.maxAge {
		return fmt.Errorf("signature check failed: stale: signed %dms from now, more than the max age %s", age, s.maxAge)
	}
	return nil
}

// replyTrace is the reply's traceparent: the command's trace id, a span id
// of our own derived from the command id (so a re-sent reply carries the
// same one), as the Rust worker derives it. Empty for a malformed one.
func replyTrace(commandTrace, commandID string) string {
	parts := strings.Split(commandTrace, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return ""
	}
	traceID, err := hex.DecodeString(parts[1])
	if err != nil || bytes.Equal(traceID, make([]byte, 16)) {
		return ""
	}
	sum := sha256.Sum256(append(traceID, []byte("reply:"+commandID)...))
	span := sum[:8]
	if bytes.Equal(span, make([]byte, 8)) {
		span[7] = 1
	}
	return fmt.Sprintf("00-%s-%s-%s", parts[1], hex.EncodeToString(span), parts[3])
}
