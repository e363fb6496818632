// protocol_test.go: the participant's protocol code against docs/protocol.md:
// the signature test vector, decoding (poison reasons, the seed's shape), and
// the reply's trace context.
package main

import (
	"strings"
	"testing"
	"time"
)

const vectorBody = `{"type":"reply","command_id":"order-42:0:a:1","saga_id":"order-42","step":0,"phase":"action","attempt":1,"outcome":{"kind":"succeeded","output":{"reservation":"r-7"}},"worker":{"service":"inventory","instance":"inventory-0","fingerprint":"f1e2d3c4"},"replied_at":1767225600500}`

func TestSignatureTestVector(t *testing.T) {
	s := newSigner("example-key-do-not-use", "", true, 5*time.Minute)
	at := time.UnixMilli(1767225600600)
	want := "v1,t=1767225600600,k=239d610c,s=40880ba7e2d950949538971365b7b3443999a28406ff1fe636472bd87703879f"
	if got := s.Sign(vectorBody, at); got != want {
		t.Fatalf("signature\n got %s\nwant %s\ncanonical:\n%s", got, want, canonical(vectorBody, 1767225600600))
	}
	if err := s.Verify(vectorBody, want, at.Add(time.Minute)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := s.Verify(vectorBody, want, at.Add(10*time.Minute)); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("a 10-minute-old signature must be stale: %v", err)
	}
	other := newSigner("another-key", "", true, 5*time.Minute)
	if err := other.Verify(vectorBody, want, at); err == nil {
		t.Fatal("a signature of another key must not verify")
	}
	if err := s.Verify(vectorBody, "", at); err == nil {
		t.Fatal("a missing signature must fail when required")
	}
}

func TestDecodeNamesPoisonAndAcceptsTheSeedShape(t *testing.T) {
	comp := map[string]string{"payment.charge": "payment.refund"}
	cases := []struct{ body, reason string }{
		{"not json", "undecodable body"},
		{`{"protocol":2,"type":"command"}`, "protocol version 2"},
		{`{"type":"reply"}`, "not a worker command"},
		{`{"type":"command","saga_id":"s"}`, "not a worker command"},
		{`{"hello":1}`, "not a worker command"},
	}
	for _, c := range cases {
		if _, err := decode(c.body, comp); err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: got %v, want a reason containing %q", c.body, err, c.reason)
		}
	}
	c, err := decode(`{"saga_id":"o-1","step":"payment.charge","payload":{"amount_cents":5},"is_compensating":true}`, comp)
	if err != nil || !c.Seed || c.Command != "payment.refund" || c.Phase != "compensation" {
		t.Fatalf("seed compensation: %+v %v", c, err)
	}
}

func TestReplyTraceKeepsTheTraceIDAndIsStable(t *testing.T) {
	in := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	a, b := replyTrace(in, "s:0:a:1"), replyTrace(in, "s:0:a:1")
	if a == "" || a != b || !strings.HasPrefix(a, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || a == in {
		t.Fatalf("reply trace %q / %q", a, b)
	}
	if replyTrace("garbage", "x") != "" {
		t.Fatal("a malformed traceparent is ignored")
	}
}
