package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
	"github.com/disco-lb/disco/core/wire"
)

// StatusResync is the status a receiver answers when it does not hold the
// state a delta applies to (it restarted, or lost its data): the sender's
// next delivery of that target is the full state, from nothing.
const StatusResync = http.StatusConflict

// ErrGone is wrapped by the error of every delivery after the receiver
// answered 410 Gone: the sender stops delivering to it.
var ErrGone = errors.New("webhook: receiver answered 410 Gone; delivery stopped")

// Option configures a Sender. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*config]

type config struct {
	kit.Common    // WithLogger
	name          string
	secrets       []string
	form          wire.Form
	client        *http.Client
	tls           *tls.Config
	timeout       time.Duration
	connect       time.Duration
	maxRetryAfter time.Duration
	maxBody       int64
	reg           prometheus.Registerer
}

// WithSecrets sets the signing secrets ("whsec_<base64>"). Every request
// is signed with each: during a rotation give the new and the old one, so
// receivers holding either accept it. Required.
func WithSecrets(secrets ...string) Option {
	return func(c *config) error { c.secrets = secrets; return nil }
}

// WithForm sets the payload: wire.FullForm (default: every delivery holds
// the complete state, and the delta) or wire.DeltaForm (only what changed:
// O(changed) bytes; a receiver that does not hold the base state answers
// StatusResync and gets the full state).
func WithForm(f wire.Form) Option {
	return kit.Checked(kit.Between("WithForm", f, wire.FullForm, wire.DeltaForm), func(c *config) { c.form = f })
}

// WithName names the receiver in metrics and logs (default: the URL's
// host).
func WithName(name string) Option { return func(c *config) error { c.name = name; return nil } }

// WithTLS sets the TLS configuration (a custom CA in RootCAs, a client
// certificate) of the sender's own HTTP client. It cannot be combined with
// WithHTTPClient (whose transport has its own TLS configuration): New
// fails with both.
func WithTLS(cfg *tls.Config) Option { return func(c *config) error { c.tls = cfg; return nil } }

// WithHTTPClient sets the HTTP client (its transport, proxy, TLS). The
// sender uses a copy that never follows redirects and bounds each request
// with WithTimeout. Set TLS in its transport, not with WithTLS.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) error { c.client = hc; return nil }
}

// WithTimeout bounds each delivery: connect, send, response headers and
// the response body (more than 0, at most 10m; default 10s). A receiver
// that hangs or trickles bytes fails at this limit.
func WithTimeout(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithTimeout", d, 10*time.Minute), func(c *config) { c.timeout = d })
}

// WithConnectTimeout bounds the TCP connect (and TLS handshake) of the
// sender's own client (more than 0, at most 10m; default 5s).
func WithConnectTimeout(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithConnectTimeout", d, 10*time.Minute), func(c *config) { c.connect = d })
}

// WithMaxRetryAfter caps the Retry-After a receiver may ask for (more than
// 0, at most 24h; default 10m). Other failed deliveries are retried after
// the hub's backoff (core.WithBackoff), per target.
func WithMaxRetryAfter(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithMaxRetryAfter", d, 24*time.Hour), func(c *config) { c.maxRetryAfter = d })
}

// WithMaxResponseBody sets how much of a response body is read (0 to
// 1 MiB; default 4 KiB); the rest is left unread.
func WithMaxResponseBody(n int64) Option {
	return kit.Checked(kit.Between("WithMaxResponseBody", n, 0, 1<<20), func(c *config) { c.maxBody = n })
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*config]

// WithRegisterer registers the sender's Prometheus metrics with reg (none
// by default; never the global registry behind your back).
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) error { c.reg = reg; return nil }
}

// Sender delivers a hub's updates to one HTTP receiver: a core.Sink. Each
// update is a POST of its wire form (wire.Schema, JSON), signed as
// Standard Webhooks says. Core's mailbox gives it the newest state of each
// target (latest wins, O(targets) memory however long the receiver is
// down) and retries a failed delivery with the newest state after its
// backoff (or the receiver's Retry-After). Attach it with Sender.Deliver so
// that targets are delivered independently of each other. Safe for
// concurrent use.
type Sender struct {
	url     string
	cfg     config
	secrets []Secret
	client  *http.Client
	log     *zap.Logger
	m       *metrics

	closeOnce sync.Once

	mu      sync.Mutex
	pending map[core.Target]time.Time // since when a target's state waits to be delivered (a later attempt is a retry)
	sending int                       // Accept calls in progress
	tlsRun  map[core.Target]bool      // the target's failures in a row include a TLS one
	gone    error
}

var _ core.Sink = (*Sender)(nil)

// New returns a sender to the receiver at rawURL (http or https). It
// checks the URL and the secrets, and starts nothing.
func New(rawURL string, opts ...Option) (*Sender, error) {
	c := config{Common: kit.Common{Log: zap.NewNop()}, form: wire.FullForm, timeout: 10 * time.Second, connect: 5 * time.Second,
		maxRetryAfter: 10 * time.Minute, maxBody: 4 << 10}
	if err := kit.Apply(&c, opts...); err != nil {
		return nil, fmt.Errorf("webhook: %w: %w", err, core.ErrInvalid)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("webhook: receiver URL %q: %v: %w", rawURL, err, core.ErrInvalid)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook: receiver URL %q: want http:// or https:// and a host: %w", rawURL, core.ErrInvalid)
	}
	if len(c.secrets) == 0 {
		return nil, fmt.Errorf("webhook: no signing secret (WithSecrets): %w", core.ErrInvalid)
	}
	if c.client != nil && c.tls != nil {
		return nil, fmt.Errorf("webhook: WithTLS and WithHTTPClient together: the client's transport has its own TLS configuration, and WithTLS would be ignored; set TLS in the transport: %w", core.ErrInvalid)
	}
	s := &Sender{url: u.String(), cfg: c, pending: map[core.Target]time.Time{}, tlsRun: map[core.Target]bool{}}
	for i, text := range c.secrets {
		sec, err := ParseSecret(text)
		if err != nil {
			return nil, fmt.Errorf("webhook: secret %d: %w", i, err)
		}
		s.secrets = append(s.secrets, sec)
	}
	if c.name == "" {
		c.name = u.Host
		s.cfg.name = u.Host
	}
	s.log = c.Log.With(zap.String("receiver", s.cfg.name))
	s.client = s.httpClient()
	if s.m, err = newMetrics(c.reg, s.cfg.name, s.oldestPending); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sender) httpClient() *http.Client {
	var hc http.Client
	if s.cfg.client != nil {
		hc = *s.cfg.client
	} else {
		d := &net.Dialer{Timeout: s.cfg.connect, KeepAlive: 30 * time.Second}
		hc.Transport = &http.Transport{
			Proxy: http.ProxyFromEnvironment, DialContext: d.DialContext, TLSClientConfig: s.cfg.tls,
			TLSHandshakeTimeout: s.cfg.connect, ResponseHeaderTimeout: s.cfg.timeout,
			MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true,
		}
	}
	// A redirect is a failure: following it would send signed endpoint
	// data wherever a receiver points.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	hc.Timeout = 0 // each request has its own deadline
	return &hc
}

// Name returns the receiver's name in metrics and logs.
func (s *Sender) Name() string { return s.cfg.name }

// Gone returns the error that stopped delivery (the receiver answered 410
// Gone), or nil.
func (s *Sender) Gone() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

// Close releases idle connections and unregisters the sender's metrics, so
// that a sender re-created with the same name (a configuration reload)
// registers them anew. Close the subscriptions first. Idempotent.
func (s *Sender) Close() {
	s.client.CloseIdleConnections()
	s.closeOnce.Do(s.m.unregister)
}

// Drain waits until no delivery is in progress and no target waits for a
// retry, or ctx ends (its error then). Call it before closing the
// deliveries on shutdown, so that what is in flight gets through within a
// bound of your choosing.
func (s *Sender) Drain(ctx context.Context) error {
	for {
		s.mu.Lock()
		idle := s.sending == 0 && len(s.pending) == 0
		s.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// forget drops what the sender keeps of a target that left: its pending
// time (which oldest_undelivered_seconds reads).
func (s *Sender) forget(t core.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, t)
	delete(s.tlsRun, t)
}

// Delivery is a sender's delivery of targets from a hub: one core
// subscription per target.
type Delivery struct {
	s       *Sender
	subs    []*core.Subscription
	targets []core.Target
}

// WaitSynced waits until every target has synced at the hub (not until it
// was delivered).
func (a *Delivery) WaitSynced(ctx context.Context) error {
	var errs []error
	for _, s := range a.subs {
		errs = append(errs, s.WaitSynced(ctx))
	}
	return errors.Join(errs...)
}

// Close ends delivery of every target, waiting for a delivery in progress
// to be cancelled, and makes the sender forget the targets (a target that
// left while its receiver was failing no longer counts as undelivered).
func (a *Delivery) Close() error {
	for i, s := range a.subs {
		s.Close()
		a.s.forget(a.targets[i])
	}
	return nil
}

// Deliver has the sender deliver targets from hub: one subscription per
// target, so that a target whose deliveries fail or are slow holds up no
// other target. At most one request per target is in flight. Close the
// Delivery to stop.
func (s *Sender) Deliver(hub *core.Hub, targets ...core.Target) (*Delivery, error) {
	a := &Delivery{s: s}
	for _, t := range targets {
		sub, err := hub.Subscribe("webhook:"+s.cfg.name+":"+t.String(), s, t)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.subs = append(a.subs, sub)
		a.targets = append(a.targets, t)
	}
	return a, nil
}

// MessageID is the webhook-id of an update: derived from its target, epoch,
// seq and base seq, so a retry of the same delivery has the same id and a
// resync (the same seq from nothing) a new one. Letters and digits only
// (Standard Webhooks keeps '.' out of ids).
func MessageID(u core.Update) string {
	h := sha256.New()
	h.Write([]byte(u.Target.String()))
	h.Write([]byte{0})
	h.Write([]byte(u.Epoch))
	var b [17]byte
	binary.BigEndian.PutUint64(b[1:9], u.Seq)
	binary.BigEndian.PutUint64(b[9:], u.BaseSeq)
	h.Write(b[:])
	return "msg_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h.Sum(nil)[:20]))
}

// Accept implements core.Sink: one signed POST of u. A 2xx accepts it;
// StatusResync (409) asks for the full state; 410 Gone stops the sender;
// anything else (a network error, a timeout, a redirect, another status)
// is retried with the newest state after the sender's schedule or the
// receiver's Retry-After.
func (s *Sender) Accept(ctx context.Context, u core.Update) error {
	if err := s.Gone(); err != nil {
		return core.Permanent(err)
	}
	s.mu.Lock()
	_, retry := s.pending[u.Target] // an earlier attempt did not get through
	if !retry {
		s.pending[u.Target] = time.Now()
	}
	s.sending++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.sending--
		s.mu.Unlock()
	}()
	if retry {
		s.m.retries.Inc()
	}
	body, err := json.Marshal(wire.From(u, s.cfg.form))
	if err != nil {
		return core.Permanent(fmt.Errorf("webhook: encode %s seq %d: %w", u.Target, u.Seq, err))
	}
	id := MessageID(u)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return core.Permanent(fmt.Errorf("webhook: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "disco-webhook/1")
	Sign(req.Header, id, time.Now(), body, s.secrets...)
	began := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		reason := "network"
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			reason = "timeout"
		case isTLS(err):
			reason = "tls"
		}
		return s.failed(u, id, reason, 0, fmt.Errorf("webhook %s: %s %s seq %d: %w", s.cfg.name, id, u.Target, u.Seq, err))
	}
	snippet, rerr := io.ReadAll(io.LimitReader(resp.Body, s.cfg.maxBody))
	resp.Body.Close()
	s.m.latency.Observe(time.Since(began).Seconds())
	code := resp.StatusCode
	describe := func(what string) error {
		msg := fmt.Sprintf("webhook %s: %s %s seq %d: %s", s.cfg.name, id, u.Target, u.Seq, what)
		if len(snippet) > 0 {
			msg += fmt.Sprintf(": %q", snippet)
		}
		return errors.New(msg)
	}
	switch {
	case code >= 200 && code < 300:
		if rerr != nil && ctx.Err() != nil {
			// The status came, but the body trickled past the deadline:
			// the receiver accepted it; count it so.
			s.log.Debug("webhook: response body cut at the deadline", zap.Error(rerr))
		}
		s.mu.Lock()
		delete(s.pending, u.Target)
		delete(s.tlsRun, u.Target)
		s.mu.Unlock()
		s.m.deliveries.WithLabelValues("ok").Inc()
		s.m.bytes.Add(float64(len(body)))
		return nil
	case code == StatusResync:
		s.m.deliveries.WithLabelValues("resync").Inc()
		s.m.failures.WithLabelValues("resync").Inc()
		return fmt.Errorf("%w: %w", describe("the receiver asks for the full state (409)"), core.ErrResync)
	case code == http.StatusGone:
		err := fmt.Errorf("%w: %w", describe("410 Gone"), ErrGone)
		s.mu.Lock()
		s.gone = err
		s.mu.Unlock()
		s.m.deliveries.WithLabelValues("gone").Inc()
		s.m.failures.WithLabelValues("gone").Inc()
		s.log.Error("webhook: the receiver is gone; no more deliveries", zap.Error(err))
		return core.Permanent(err)
	case code >= 300 && code < 400:
		return s.failed(u, id, "redirect", 0, describe(fmt.Sprintf("HTTP %d redirect to %q not followed", code, resp.Header.Get("Location"))))
	}
	if rerr != nil && ctx.Err() != nil {
		// A status, then a body that trickles past the deadline.
		return s.failed(u, id, "timeout", 0, describe(fmt.Sprintf("HTTP %d, and its body still coming at the %s deadline", code, s.cfg.timeout)))
	}
	var after time.Duration
	reason := fmt.Sprintf("http_%dxx", code/100)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		reason = "http_" + strconv.Itoa(code)
		after = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return s.failed(u, id, reason, after, describe(fmt.Sprintf("HTTP %d", code)))
}

// failed counts a failed delivery and returns err marked to be retried,
// after the hub's per-target backoff, or after after (a Retry-After),
// capped.
func (s *Sender) failed(u core.Update, id, reason string, after time.Duration, err error) error {
	s.mu.Lock()
	firstTLS := reason == "tls" && !s.tlsRun[u.Target]
	if reason == "tls" {
		s.tlsRun[u.Target] = true
	}
	s.mu.Unlock()
	delay := time.Duration(0) // core's backoff
	if after > 0 {
		delay = min(after, s.cfg.maxRetryAfter)
	}
	s.m.deliveries.WithLabelValues("failed").Inc()
	s.m.failures.WithLabelValues(reason).Inc()
	log := s.log.Warn
	msg := "webhook: delivery failed; retrying with the newest state"
	if firstTLS {
		// Rarely transient: an untrusted certificate, a wrong name, an
		// expired one. Said loudly once per run of failures.
		log, msg = s.log.Error, "webhook: TLS with the receiver failed (its certificate is not trusted, or the handshake failed); retrying with the newest state"
	}
	fields := []zap.Field{zap.String("id", id), zap.Stringer("target", u.Target), zap.Uint64("seq", u.Seq), zap.Error(err)}
	if delay > 0 {
		fields = append(fields, zap.Duration("retry_after", delay))
	}
	log(msg, fields...)
	return core.Retry(err, delay)
}

// isTLS reports whether a request failed in TLS: a certificate that does not
// verify, or a failed handshake.
func isTLS(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	var header tls.RecordHeaderError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) ||
		errors.As(err, &alert) || errors.As(err, &header)
}

// oldestPending is how long the oldest undelivered state has waited.
func (s *Sender) oldestPending() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest time.Duration
	for _, since := range s.pending {
		oldest = max(oldest, time.Since(since))
	}
	return oldest
}

// retryAfter reads a Retry-After header: delay seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, 1<<32)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
