"""sqsaga participant in Python (boto3 + psycopg): the same service as
participants/go, after docs/protocol.md. It polls its service's queue, runs
every command through the idempotency barrier in PostgreSQL in the same
transaction as the business change, replies to the command's reply_to queue
and only then deletes the message; poison messages go to the DLQ with a
reason. /healthz and /readyz on SQSAGA_HTTP_ADDR; SIGTERM drains and exits 0.
Implements conformance/v1 and payment/v1.

Environment: SQSAGA_SERVICE, DATABASE_URL, AWS_ENDPOINT_URL (the embedded
backend's SQS endpoint, or an emulator), SQSAGA_QUEUE_PREFIX,
SQSAGA_HTTP_ADDR, SQSAGA_WAIT_TIME, SQSAGA_VISIBILITY_TIMEOUT,
SQSAGA_SIGNING_KEY(_PREVIOUS), SQSAGA_REQUIRE_SIGNATURE,
SQSAGA_SIGNATURE_MAX_AGE (seconds).
"""

import hashlib
import hmac
import http.server
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

import boto3
import psycopg

ATTR_SIGNATURE = "sqsaga-signature"
ATTR_TRACEPARENT = "traceparent"
FENCE = "sqsaga.fence"

BARRIER_SCHEMA = """
CREATE TABLE IF NOT EXISTS sqsaga_barrier (
    saga_id TEXT NOT NULL, step TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('action', 'compensation')),
    outcome TEXT NOT NULL, created_at BIGINT NOT NULL,
    PRIMARY KEY (saga_id, step, op));
CREATE TABLE IF NOT EXISTS conformance_counters (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0));
CREATE TABLE IF NOT EXISTS charges (order_id TEXT PRIMARY KEY, account TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0), status TEXT NOT NULL CHECK (status IN ('charged', 'refunded')));
CREATE TABLE IF NOT EXISTS merchant (id INTEGER PRIMARY KEY CHECK (id = 1), balance BIGINT NOT NULL);
INSERT INTO merchant (id, balance) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
"""

log = logging.getLogger("participant")


class Poison(Exception):
    """A message that can never be processed: dead-lettered with the reason."""


class Refused(Exception):
    """A business refusal: the handler's writes roll back, the barrier keeps it."""


def now_ms():
    return int(time.time() * 1000)


# --- the wire --------------------------------------------------------------

def decode(body, compensations):
    try:
        fields = json.loads(body)
    except ValueError as e:
        raise Poison(f"undecodable body: body is not JSON: {e}") from None
    if not isinstance(fields, dict):
        raise Poison("undecodable body: body is not a JSON object")
    if "protocol" in fields and not (type(fields["protocol"]) is int and fields["protocol"] == 1):
        raise Poison(f"undecodable body: protocol version {json.dumps(fields['protocol'])} is not supported (absent means 1)")
    if "type" in fields:
        if fields["type"] != "command":
            raise Poison(f"not a worker command: a {fields['type']!r} message is not meant for this queue")
        need = ("command_id", "saga_id", "step_name", "command", "reply_to")
        if any(not isinstance(fields.get(k), str) or not fields[k] for k in need) \
                or fields.get("phase") not in ("action", "compensation") \
                or not isinstance(fields.get("attempt"), int) or fields["attempt"] < 1:
            raise Poison("not a worker command: command_id, saga_id, step_name, command, phase, attempt and reply_to are required")
        fields["seed"] = False
        return fields
    if not isinstance(fields.get("saga_id"), str) or not isinstance(fields.get("step"), str):
        raise Poison("not a worker command: neither an sqsaga command nor a seed message")
    command = fields["step"]
    phase = "action"
    if fields.get("is_compensating"):
        phase, command = "compensation", compensations.get(fields["step"])
        if command is None:
            raise Poison(f"unknown command `{fields['step']}` (no compensation registered)")
    return {"seed": True, "saga_id": fields["saga_id"], "step_name": fields["step"], "command": command,
            "phase": phase, "attempt": 1, "payload": fields.get("payload")}


def saga_input(c):
    payload = c.get("payload") or {}
    if not c["seed"] and isinstance(payload, dict) and isinstance(payload.get("input"), dict):
        return payload["input"]
    return payload if isinstance(payload, dict) else {}


def canonical(body, t):
    try:
        fields = json.loads(body)
    except ValueError:
        fields = {}
    fields = fields if isinstance(fields, dict) else {}

    def text(name):
        v = fields.get(name)
        if v is None:
            return ""
        return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False)

    kind = text("type") if "type" in fields else ("seed" if "saga_id" in fields else "")
    phase = text("phase")
    if "is_compensating" in fields:
        phase = "compensation" if fields["is_compensating"] is True else "action"
    lines = [("sqsaga-signature", "v1"), ("kind", kind), ("saga_id", text("saga_id")),
             ("command_id", text("command_id")), ("step", text("step")), ("phase", phase),
             ("attempt", text("attempt")), ("t", str(t)),
             ("body_sha256", hashlib.sha256(body.encode()).hexdigest())]
    return "".join(f"{k}={json.dumps(v, ensure_ascii=False)}\n" for k, v in lines)


class Signer:
    def __init__(self, key, previous, require, max_age_ms):
        self.current = self.key_id(key)
        self.keys = {self.current: key.encode()}
        if previous:
            self.keys[self.key_id(previous)] = previous.encode()
        self.require, self.max_age_ms = require, max_age_ms

    @staticmethod
    def key_id(key):
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def mac(self, kid, text):
        return hmac.new(self.keys[kid], text.encode(), hashlib.sha256).hexdigest()

    def sign(self, body):
        t = now_ms()
        return f"v1,t={t},k={self.current},s={self.mac(self.current, canonical(body, t))}"

    def verify(self, body, attr):
        if not attr:
            if self.require:
                raise Poison("signature check failed: the message is not signed and signatures are required")
            return
        if not attr.startswith("v1,"):
            raise Poison("signature check failed: forged or altered message: unknown signature format")
        parts = {}
        for part in attr[3:].split(","):
            name, sep, value = part.partition("=")
            if not sep or name in parts or name not in ("t", "k", "s"):
                raise Poison("signature check failed: forged or altered message: malformed attribute")
            parts[name] = value
        try:
            t = int(parts.get("t", ""))
        except ValueError:
            raise Poison("signature check failed: forged or altered message: bad t") from None
        kid, sig = parts.get("k", ""), parts.get("s", "").lower()
        if kid not in self.keys or len(sig) != 64:
            raise Poison(f"signature check failed: forged or altered message: unknown key id {kid!r}")
        if not hmac.compare_digest(self.mac(kid, canonical(body, t)), sig):
            raise Poison("signature check failed: forged or altered message: the signature does not match")
        if abs(now_ms() - t) > self.max_age_ms:
            raise Poison("signature check failed: stale: older than the max age")


def reply_trace(trace, command_id):
    parts = (trace or "").split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id = bytes.fromhex(parts[1])
    except ValueError:
        return None
    span = bytearray(hashlib.sha256(trace_id + f"reply:{command_id}".encode()).digest()[:8])
    if not any(span):
        span[7] = 1
    return f"00-{parts[1]}-{span.hex()}-{parts[3]}"


# --- the business ------------------------------------------------------------

def text_field(inp, name):
    v = inp.get(name)
    if not isinstance(v, str) or not v:
        raise Refused(f"input.{name} must be a non-empty string")
    return v


def int_field(inp, name, required=False):
    v = inp.get(name)
    if v is None:
        if required:
            raise Refused(f"input.{name} is required")
        return 0
    if type(v) is not int:
        raise Refused(f"input.{name} must be an integer")
    return v


def counter(cur, key, delta):
    cur.execute("""INSERT INTO conformance_counters (key, value) VALUES (%s, %s)
        ON CONFLICT (key) DO UPDATE SET value = conformance_counters.value + EXCLUDED.value RETURNING value""",
                (key, delta))
    return {"key": key, "value": cur.fetchone()[0]}


def conformance_apply(cur, c):
    inp = saga_input(c)
    key, amount = text_field(inp, "key"), int_field(inp, "amount")
    if isinstance(inp.get("refuse"), str):
        raise Refused(inp["refuse"])
    below = inp.get("transient_below_attempt")
    if type(below) is int and c["attempt"] < below:
        raise RuntimeError(f"conformance/v1: transient failure requested for attempts below {below} (this is attempt {c['attempt']})")
    return counter(cur, key, amount)


def conformance_undo(cur, c):
    inp = saga_input(c)
    return counter(cur, text_field(inp, "key"), -int_field(inp, "amount"))


def conformance_read(cur, c):
    key = text_field(saga_input(c), "key")
    cur.execute("SELECT value FROM conformance_counters WHERE key = %s", (key,))
    row = cur.fetchone()
    return {"key": key, "value": row[0] if row else 0}


def payment_charge(cur, c):
    inp = saga_input(c)
    order_id, account = text_field(inp, "order_id"), text_field(inp, "account")
    cents = int_field(inp, "amount", required=True)
    if cents <= 0:
        raise Refused("input.amount must be positive")
    cur.execute("SELECT status FROM charges WHERE order_id = %s", (order_id,))
    row = cur.fetchone()
    if row:
        raise Refused(f"order {order_id} already has a charge ({row[0]})")
    cur.execute("SELECT balance FROM accounts WHERE account = %s FOR UPDATE", (account,))
    row = cur.fetchone()
    if not row:
        raise Refused(f"card declined: unknown account {account}")
    if row[0] < cents:
        raise Refused("card declined: insufficient funds")
    cur.execute("UPDATE accounts SET balance = balance - %s WHERE account = %s", (cents, account))
    cur.execute("UPDATE merchant SET balance = balance + %s WHERE id = 1", (cents,))
    cur.execute("INSERT INTO charges (order_id, account, amount, status) VALUES (%s, %s, %s, 'charged')",
                (order_id, account, cents))
    return {"charge": order_id, "amount": cents}


def payment_refund(cur, c):
    order_id = text_field(saga_input(c), "order_id")
    cur.execute("SELECT account, amount FROM charges WHERE order_id = %s AND status = 'charged'", (order_id,))
    row = cur.fetchone()
    if not row:
        return {"refunded": 0}
    account, cents = row
    cur.execute("UPDATE merchant SET balance = balance - %s WHERE id = 1", (cents,))
    cur.execute("UPDATE accounts SET balance = balance + %s WHERE account = %s", (cents, account))
    cur.execute("UPDATE charges SET status = 'refunded' WHERE order_id = %s", (order_id,))
    return {"refunded": cents}


# command -> (contract, phase, handler)
COMMANDS = {
    "conformance.apply": ("conformance/v1", "action", conformance_apply),
    "conformance.undo": ("conformance/v1", "compensation", conformance_undo),
    "conformance.read": ("conformance/v1", "action", conformance_read),
    "payment.charge": ("payment/v1", "action", payment_charge),
    "payment.refund": ("payment/v1", "compensation", payment_refund),
}
COMPENSATIONS = {"conformance.apply": "conformance.undo", "payment.charge": "payment.refund"}
CONTRACTS = {contract for contract, _, _ in COMMANDS.values()}


# --- the barrier ---------------------------------------------------------------

class Rollback(Exception):
    """Ends the transaction without committing, carrying the outcome to reply."""

    def __init__(self, outcome):
        super().__init__(outcome)
        self.outcome = outcome


def run_barrier(conn, c, handler):
    """One transaction: advisory lock on (saga, step), the rules of
    docs/protocol.md "The barrier", the handler under a savepoint, the row."""
    try:
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (c["saga_id"], c["step_name"]))

            def row(op):
                cur.execute("SELECT outcome FROM sqsaga_barrier WHERE saga_id = %s AND step = %s AND op = %s",
                            (c["saga_id"], c["step_name"], op))
                r = cur.fetchone()
                return json.loads(r[0]) if r else None

            def write(op, outcome):
                cur.execute("INSERT INTO sqsaga_barrier (saga_id, step, op, outcome, created_at) VALUES (%s, %s, %s, %s, %s)",
                            (c["saga_id"], c["step_name"], op, json.dumps(outcome), now_ms()))
                return outcome

            def run_handler():
                try:
                    with conn.transaction():  # a savepoint
                        return {"kind": "succeeded", "output": handler(cur, c)}
                except Refused as e:
                    return {"kind": "refused", "reason": str(e)}
                except psycopg.OperationalError:
                    raise
                except Exception as e:  # noqa: BLE001 - any other failure is transient
                    raise Rollback({"kind": "transient", "error": str(e)}) from None

            action = row("action")
            if c["phase"] == "action":
                if action is not None:
                    if action["kind"] == "prevented":
                        raise Rollback({"kind": "refused", "reason": "compensated before the action ran"})
                    raise Rollback(action)
                not_after = c.get("not_after")
                if isinstance(not_after, int) and now_ms() > not_after:
                    return write("action", {"kind": "refused", "reason": f"expired in queue: {now_ms() - not_after}ms past its latest start"})
                return write("action", run_handler())
            comp = row("compensation")
            if comp is not None:
                raise Rollback(comp)
            fence = c["command"] == FENCE
            nothing = {"fence": "prevented"} if fence else None
            if action is None:
                write("action", {"kind": "prevented"})
                return write("compensation", {"kind": "succeeded", "output": nothing})
            if action["kind"] != "succeeded":
                return write("compensation", {"kind": "succeeded", "output": nothing})
            if fence:
                return write("compensation", {"kind": "succeeded",
                                              "output": {"fence": "already_ran", "output": action.get("output")}})
            outcome = run_handler()
            if outcome["kind"] != "succeeded":
                raise Rollback(outcome)  # a refused compensation writes nothing
            return write("compensation", outcome)
    except Rollback as r:
        return r.outcome


# --- the worker --------------------------------------------------------------

class Worker:
    def __init__(self):
        self.service = os.environ.get("SQSAGA_SERVICE", "payment")
        self.prefix = os.environ.get("SQSAGA_QUEUE_PREFIX", "")
        self.instance = os.environ.get("SQSAGA_INSTANCE_ID", f"{self.service}-py-{socket.gethostname()}-{os.getpid()}")
        self.wait = int(os.environ.get("SQSAGA_WAIT_TIME", "20").rstrip("s"))
        self.visibility = int(os.environ.get("SQSAGA_VISIBILITY_TIMEOUT", "30").rstrip("s"))
        key = os.environ.get("SQSAGA_SIGNING_KEY", "")
        require = os.environ.get("SQSAGA_REQUIRE_SIGNATURE", "false") == "true"
        if require and not key:
            sys.exit("SQSAGA_REQUIRE_SIGNATURE=true needs SQSAGA_SIGNING_KEY")
        max_age = int(os.environ.get("SQSAGA_SIGNATURE_MAX_AGE", "300").rstrip("s")) * 1000
        self.signer = Signer(key, os.environ.get("SQSAGA_SIGNING_KEY_PREVIOUS", ""), require, max_age) if key else None
        url = os.environ.get("DATABASE_URL") or sys.exit("DATABASE_URL must name the participant's PostgreSQL database")
        self.db = psycopg.connect(url, autocommit=True)
        self.db.execute(BARRIER_SCHEMA)
        self.sqs = boto3.client("sqs", region_name=os.environ.get("AWS_REGION", "us-east-1"),
                                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "sqsaga"),
                                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "sqsaga"))
        self.urls = {}
        self.ready = False
        self.stopping = threading.Event()

    def url(self, name):
        if name not in self.urls:
            self.urls[name] = self.sqs.get_queue_url(QueueName=self.prefix + name)["QueueUrl"]
        return self.urls[name]

    def dead_letter(self, m, reason):
        log.warning("poison message %s dead-lettered: %s", m["MessageId"], reason)
        attrs = dict(m.get("MessageAttributes", {}))
        attrs["sqsaga-dlq-reason"] = {"DataType": "String", "StringValue": reason.encode()[:1024].decode(errors="ignore")}
        attrs["sqsaga-dlq-source"] = {"DataType": "String", "StringValue": self.service}
        self.sqs.send_message(QueueUrl=self.url(self.service + "-dlq"), MessageBody=m["Body"], MessageAttributes=attrs)
        self.delete(m)

    def delete(self, m):
        self.sqs.delete_message(QueueUrl=self.url(self.service), ReceiptHandle=m["ReceiptHandle"])

    def handle(self, m):
        body = m["Body"]
        attrs = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
        try:
            c = decode(body, COMPENSATIONS)
            if self.signer:
                self.signer.verify(body, attrs.get(ATTR_SIGNATURE))
        except Poison as e:
            return self.dead_letter(m, str(e))
        handler = None
        if not (c["command"] == FENCE and c["phase"] == "compensation"):
            if not c["seed"] and c.get("contract") not in CONTRACTS:
                log.info("contract %s not implemented here; released for a sibling", c.get("contract"))
                self.sqs.change_message_visibility(QueueUrl=self.url(self.service), ReceiptHandle=m["ReceiptHandle"],
                                                   VisibilityTimeout=0)
                return None
            known = COMMANDS.get(c["command"])
            if known is None or known[1] != c["phase"] or (not c["seed"] and known[0] != c.get("contract")):
                return self.dead_letter(m, f"unknown command `{c['command']}` ({c['phase']} of {c.get('contract')})")
            handler = known[2]
        try:
            outcome = run_barrier(self.db, c, handler)
        except psycopg.Error as e:
            log.error("participant database: %s (the message comes back after its visibility timeout)", e)
            return None
        log.info("saga=%s step=%s command=%s attempt=%s outcome=%s trace=%s", c["saga_id"], c["step_name"],
                 c["command"], c["attempt"], outcome["kind"], attrs.get(ATTR_TRACEPARENT))
        if c["seed"]:
            if outcome["kind"] != "transient":
                self.delete(m)
            return None
        self.reply(c, outcome, attrs.get(ATTR_TRACEPARENT))
        self.delete(m)
        return None

    def reply(self, c, outcome, trace):
        body = json.dumps({"type": "reply", "command_id": c["command_id"], "saga_id": c["saga_id"],
                           "step": c.get("step", 0), "phase": c["phase"], "attempt": c["attempt"],
                           "outcome": outcome,
                           "worker": {"service": self.service, "instance": self.instance, "fingerprint": "unknown"},
                           "replied_at": now_ms()}, separators=(",", ":"))
        attrs = {}
        tp = reply_trace(trace, c["command_id"])
        if tp:
            attrs[ATTR_TRACEPARENT] = {"DataType": "String", "StringValue": tp}
        if self.signer:
            attrs[ATTR_SIGNATURE] = {"DataType": "String", "StringValue": self.signer.sign(body)}
        self.sqs.send_message(QueueUrl=self.url(c["reply_to"]), MessageBody=body, MessageAttributes=attrs)

    def poll(self):
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                out = self.sqs.receive_message(QueueUrl=self.url(self.service), MaxNumberOfMessages=10,
                                               WaitTimeSeconds=self.wait, VisibilityTimeout=self.visibility,
                                               MessageAttributeNames=["All"])
                self.ready, backoff = True, 0.1
                for m in out.get("Messages", []):
                    self.handle(m)  # a batch in hand is finished even when stopping
            except Exception as e:  # noqa: BLE001 - the loop must survive the queue being away
                self.ready = False
                log.warning("receive from %s failed (retrying in %.1fs): %s", self.service, backoff, e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5)


def serve_health(worker, addr):
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            status, text = 404, "not found"
            if self.path == "/healthz":
                status, text = 200, "ok"
            elif self.path == "/readyz":
                try:
                    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=2) as probe:
                        probe.execute("SELECT 1")
                    ok = worker.ready and not worker.stopping.is_set()
                    status, text = (200, "ready") if ok else (503, "queue not reachable yet, or shutting down")
                except psycopg.Error as e:
                    status, text = 503, f"participant database: {e}"
            self.send_response(status)
            self.end_headers()
            self.wfile.write(text.encode() + b"\n")

        def log_message(self, *args):
            pass

    host, _, port = addr.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker()
    server = serve_health(worker, os.environ.get("SQSAGA_HTTP_ADDR", "127.0.0.1:8082"))
    # Kubernetes sends SIGTERM, then SIGKILL after the grace period: stop
    # receiving, finish the batch in hand (at most one long poll away), exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    log.info("participant %s (%s) started: queue %s%s", worker.service, worker.instance, worker.prefix, worker.service)
    poller = threading.Thread(target=worker.poll)
    poller.start()
    while poller.is_alive():
        poller.join(0.2)
    server.shutdown()
    worker.db.close()
    log.info("participant %s stopped", worker.service)


if __name__ == "__main__":
    main()
