// sqsaga-participant-go: the seed's Go SQS worker, finished as an sqsaga
// participant (docs/protocol.md). It polls its service's queue, runs every
// command through the idempotency barrier in PostgreSQL in the same
// transaction as the business change, replies to the command's reply_to
// queue, and only then deletes the message; poison messages go to the DLQ
// with a reason instead of being deleted. /healthz and /readyz on
// SQSAGA_HTTP_ADDR; SIGTERM drains in-flight work and exits.
//
// Built offline from Debian's packages: GO111MODULE=off
// GOPATH=/usr/share/gocode go build (see README, "Participants in other
// languages").
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	_ "github.com/lib/pq"
)

// AppConfig is read from the environment, with the names the Rust worker uses.
type AppConfig struct {
	Service     string        // SQSAGA_SERVICE: the queue to poll
	Instance    string        // SQSAGA_INSTANCE_ID
	QueuePrefix string        // SQSAGA_QUEUE_PREFIX: physical queue name = prefix + logical name
	DatabaseURL string        // DATABASE_URL: the participant's own PostgreSQL database
	HTTPAddr    string        // SQSAGA_HTTP_ADDR: /healthz and /readyz
	Endpoint    string        // AWS_ENDPOINT_URL: the embedded backend's SQS endpoint, or an emulator
	Region      string        // AWS_REGION
	Wait        int32         // SQSAGA_WAIT_TIME seconds of a long poll
	Visibility  int32         // SQSAGA_VISIBILITY_TIMEOUT seconds
	Drain       time.Duration // SQSAGA_DRAIN_TIMEOUT
	Signer      *Signer       // SQSAGA_SIGNING_KEY (+ _PREVIOUS), SQSAGA_REQUIRE_SIGNATURE, SQSAGA_SIGNATURE_MAX_AGE
}

func env(name, fallback string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return fallback
}

// seconds reads a duration given as `20s`, `5m` or a number of seconds.
func seconds(name, fallback string) (time.Duration, error) {
	v := env(name, fallback)
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: not a duration", name, v)
	}
	return d, nil
}

func loadConfig() (*AppConfig, error) {
	var problems []string
	c := &AppConfig{
		Service:     env("SQSAGA_SERVICE", "payment"),
		QueuePrefix: os.Getenv("SQSAGA_QUEUE_PREFIX"),
		DatabaseURL: os.Getenv("DATABASE_URL"),
		HTTPAddr:    env("SQSAGA_HTTP_ADDR", "127.0.0.1:8081"),
		Endpoint:    os.Getenv("AWS_ENDPOINT_URL"),
		Region:      env("AWS_REGION", env("AWS_DEFAULT_REGION", "us-east-1")),
	}
	host, _ := os.Hostname()
	c.Instance = env("SQSAGA_INSTANCE_ID", fmt.Sprintf("%s-go-%s-%d", c.Service, host, os.Getpid()))
	if c.DatabaseURL == "" {
		problems = append(problems, "DATABASE_URL must name the participant's PostgreSQL database")
	}
	wait, err1 := seconds("SQSAGA_WAIT_TIME", "20")
	visibility, err2 := seconds("SQSAGA_VISIBILITY_TIMEOUT", "30")
	drain, err3 := seconds("SQSAGA_DRAIN_TIMEOUT", "25")
	maxAge, err4 := seconds("SQSAGA_SIGNATURE_MAX_AGE", "5m")
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			problems = append(problems, err.Error())
		}
	}
	if wait > 20*time.Second {
		problems = append(problems, "SQSAGA_WAIT_TIME must be at most 20s (the SQS maximum)")
	}
	c.Wait, c.Visibility, c.Drain = int32(wait/time.Second), int32(visibility/time.Second), drain
	require := env("SQSAGA_REQUIRE_SIGNATURE", "false") == "true"
	key := os.Getenv("SQSAGA_SIGNING_KEY")
	if require && key == "" {
		problems = append(problems, "SQSAGA_REQUIRE_SIGNATURE=true needs SQSAGA_SIGNING_KEY")
	}
	c.Signer = newSigner(key, os.Getenv("SQSAGA_SIGNING_KEY_PREVIOUS"), require, maxAge)
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return c, nil
}

// Worker is the participant: its queue, its database, its handlers.
type Worker struct {
	cfg      *AppConfig
	sqs      *sqs.Client
	barrier  *Barrier
	registry *Registry
	urls     sync.Map // logical queue name -> URL
	ready    atomic.Bool
}

// queueURL resolves a logical queue name (`payment`, `orchestrator`) to its URL.
func (w *Worker) queueURL(ctx context.Context, name string) (string, error) {
	if u, ok := w.urls.Load(name); ok {
		return u.(string), nil
	}
	out, err := w.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(w.cfg.QueuePrefix + name)})
	if err != nil {
		return "", err
	}
	w.urls.Store(name, *out.QueueUrl)
	return *out.QueueUrl, nil
}

func stringAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

func attrsOf(m types.Message) map[string]string {
	out := map[string]string{}
	for name, v := range m.MessageAttributes {
		if v.StringValue != nil {
			out[name] = *v.StringValue
		}
	}
	return out
}

// deadLetter sends a copy to the DLQ with the reason, then deletes the original: never the other way round.
func (w *Worker) deadLetter(ctx context.Context, queueURL string, m types.Message, reason string) {
	if len(reason) > 1024 {
		reason = reason[:1024]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	log.Printf("WARN: poison message %s dead-lettered: %s", aws.ToString(m.MessageId), reason)
	attrs := map[string]types.MessageAttributeValue{}
	for name, v := range m.MessageAttributes {
		attrs[name] = v
	}
	attrs[attrDlqReason] = stringAttr(reason)
	attrs[attrDlqSource] = stringAttr(w.cfg.Service)
	dlq, err := w.queueURL(ctx, w.cfg.Service+"-dlq")
	if err == nil {
		_, err = w.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(dlq), MessageBody: m.Body, MessageAttributes: attrs})
	}
	if err != nil {
		log.Printf("ERROR: cannot dead-letter %s (it comes back after its visibility timeout): %v", aws.ToString(m.MessageId), err)
		return
	}
	w.delete(ctx, queueURL, m)
}

func (w *Worker) delete(ctx context.Context, queueURL string, m types.Message) {
	if _, err := w.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(queueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
		log.Printf("ERROR: cannot delete %s: %v", aws.ToString(m.MessageId), err)
	}
}

// handle runs one received message through the participant rules, in order.
func (w *Worker) handle(ctx context.Context, queueURL string, m types.Message) {
	body := aws.ToString(m.Body)
	attrs := attrsOf(m)
	// 1. Decode.
	c, err := decode(body, w.registry.compensations)
	if err != nil {
		w.deadLetter(ctx, queueURL, m, err.Error())
		return
	}
	// 2. Conformance: this participant computes no fingerprint (not for enforce-mode services).
	// 3. Signature.
	if w.cfg.Signer != nil {
		if err := w.cfg.Signer.Verify(body, attrs[attrSignature], time.Now()); err != nil {
			w.deadLetter(ctx, queueURL, m, err.Error())
			return
		}
	}
	// 4. Contract and command.
	var h Handler
	if c.Command != fenceCommand || c.Phase != "compensation" {
		if !c.Seed && !w.registry.contracts[c.Contract] {
			log.Printf("INFO: contract %s not implemented here; released for a sibling", c.Contract)
			_, _ = w.sqs.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(queueURL), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0})
			return
		}
		reg, ok := w.registry.commands[c.Command]
		if !ok || reg.phase != c.Phase || (!c.Seed && reg.contract != c.Contract) {
			w.deadLetter(ctx, queueURL, m, fmt.Sprintf("unknown command `%s` (%s of %s)", c.Command, c.Phase, c.Contract))
			return
		}
		h = reg.handler
	}
	// 5. Run through the barrier, in one transaction with the business change.
	// Work in flight finishes even when shutdown begins: a fresh context.
	work, cancel := context.WithTimeout(context.Background(), time.Duration(w.cfg.Visibility)*time.Second)
	defer cancel()
	outcome, err := w.barrier.Run(work, c, h, time.Now())
	if err != nil {
		log.Printf("ERROR: saga %s step %s: %v (the message comes back after its visibility timeout)", c.SagaID, c.StepName, err)
		return
	}
	log.Printf("INFO: saga=%s step=%s command=%s attempt=%d outcome=%s trace=%s", c.SagaID, c.StepName, c.Command, c.Attempt, outcome.Kind, attrs[attrTraceparent])
	if c.Seed {
		if outcome.Kind != "transient" {
			w.delete(work, queueURL, m)
		}
		return
	}
	// 6. Reply, then delete.
	if err := w.reply(work, c, outcome, attrs[attrTraceparent]); err != nil {
		log.Printf("ERROR: cannot reply to %s (the command comes back; the barrier answers it again): %v", c.CommandID, err)
		return
	}
	w.delete(work, queueURL, m)
}

func (w *Worker) reply(ctx context.Context, c *Command, o Outcome, trace string) error {
	now := time.Now()
	body, err := replyBody(c, o, w.cfg.Service, w.cfg.Instance, now)
	if err != nil {
		return err
	}
	attrs := map[string]types.MessageAttributeValue{}
	if tp := replyTrace(trace, c.CommandID); tp != "" {
		attrs[attrTraceparent] = stringAttr(tp)
	}
	if w.cfg.Signer != nil {
		attrs[attrSignature] = stringAttr(w.cfg.Signer.Sign(body, now))
	}
	url, err := w.queueURL(ctx, c.ReplyTo)
	if err != nil {
		return err
	}
	_, err = w.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: attrs})
	return err
}

// poll receives and handles batches until ctx ends; the batch in hand is finished first.
func (w *Worker) poll(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		queueURL, err := w.queueURL(ctx, w.cfg.Service)
		if err == nil {
			w.ready.Store(true)
			var out *sqs.ReceiveMessageOutput
			out, err = w.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
				QueueUrl:              aws.String(queueURL),
				MaxNumberOfMessages:   10,
				WaitTimeSeconds:       w.cfg.Wait,
				VisibilityTimeout:     w.cfg.Visibility,
				MessageAttributeNames: []string{"All"},
			})
			if err == nil {
				backoff = 100 * time.Millisecond
				for _, m := range out.Messages {
					w.handle(ctx, queueURL, m)
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		w.ready.Store(false)
		log.Printf("WARN: receive from %s failed (retrying in %s): %v", w.cfg.Service, backoff, err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func main() {
	cfg, err := loadConfig()
	if err != nil {
		log.Fatalf("FATAL: configuration: %v", err)
	}
	db, err := sql.Open("postgres", cfg.DatabaseURL)
	if err != nil {
		log.Fatalf("FATAL: DATABASE_URL: %v", err)
	}
	if _, err := db.Exec(barrierSchema + businessSchema); err != nil {
		log.Fatalf("FATAL: cannot create the tables: %v", err)
	}
	options := []func(*config.LoadOptions) error{config.WithRegion(cfg.Region)}
	if cfg.Endpoint != "" && os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		// The embedded endpoint on loopback checks no credentials; the SDK still signs.
		options = append(options, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("sqsaga", "sqsaga", "")))
	}
	awsCfg, err := config.LoadDefaultConfig(context.Background(), options...)
	if err != nil {
		log.Fatalf("FATAL: AWS SDK configuration: %v", err)
	}
	client := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if cfg.Endpoint != "" {
			o.EndpointResolver = sqs.EndpointResolverFromURL(cfg.Endpoint)
		}
	})
	registry := newRegistry()
	register(registry)
	w := &Worker{cfg: cfg, sqs: client, barrier: &Barrier{db: db}, registry: registry}

	// Kubernetes sends SIGTERM, then SIGKILL after the grace period (30 s by
	// default): stop receiving at once, finish the batch in hand within the drain budget.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, r *http.Request) {
		if err := db.PingContext(r.Context()); err != nil {
			http.Error(rw, "participant database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if !w.ready.Load() || ctx.Err() != nil {
			http.Error(rw, "queue "+cfg.Service+" not reachable yet, or shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	server := &http.Server{Addr: cfg.HTTPAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatalf("FATAL: HTTP on %s: %v", cfg.HTTPAddr, err)
		}
	}()

	log.Printf("INFO: participant %s (%s) started: queue %s%s, http %s, endpoint %q", cfg.Service, cfg.Instance, cfg.QueuePrefix, cfg.Service, cfg.HTTPAddr, cfg.Endpoint)
	done := make(chan struct{})
	go func() { w.poll(ctx); close(done) }()
	<-ctx.Done()
	log.Printf("INFO: shutdown signal received; draining (at most %s)", cfg.Drain)
	select {
	case <-done:
	case <-time.After(cfg.Drain):
		log.Printf("WARN: drain budget spent; what is left comes back after its visibility timeout")
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = server.Shutdown(shutdown)
	_ = db.Close()
	log.Printf("INFO: participant %s stopped", cfg.Service)
}
