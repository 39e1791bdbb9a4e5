package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
)

// Option configures a Source. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*options]

type options struct {
	kit.Common // WithLogger, WithBackoff
	format     Format
	scheme     string
	unreach    time.Duration
	username   string
	password   string
	tls        *tls.Config
	dial       time.Duration
}

// WithFormat sets how values are read (default Auto).
func WithFormat(f Format) Option {
	return kit.Checked(kit.Between("WithFormat", f, Auto, Kratos), func(o *options) { o.format = f })
}

// WithScheme sets the scheme of a kratos instance's endpoint to use
// (default "grpc").
func WithScheme(scheme string) Option {
	return func(o *options) error {
		if scheme == "" || strings.ContainsAny(scheme, ":/ ") {
			return &kit.OptionError{Option: "WithScheme", Value: fmt.Sprintf("%q", scheme), Want: `a URL scheme ("grpc")`}
		}
		o.scheme = scheme
		return nil
	}
}

// WithUnreachableAfter sets how long etcd may be unreachable before the
// targets go stale (more than 0, at most 1m; default 2s). The set stays.
func WithUnreachableAfter(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithUnreachableAfter", d, time.Minute), func(o *options) { o.unreach = d })
}

// WithAuth sets etcd's username and password (New only).
func WithAuth(username, password string) Option {
	return func(o *options) error { o.username, o.password = username, password; return nil }
}

// WithTLS sets the client's TLS (a CA, and a certificate for client
// certificate authentication; New only).
func WithTLS(cfg *tls.Config) Option { return func(o *options) error { o.tls = cfg; return nil } }

// WithDialTimeout bounds the first connection (New only; default 5s).
func WithDialTimeout(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithDialTimeout", d, time.Minute), func(o *options) { o.dial = d })
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*options]

// WithBackoff sets the jittered backoff between failed reads (0 < min <=
// max <= 24h; default 200ms to 30s).
func WithBackoff(min, max time.Duration) Option {
	return kit.WithBackoff[*options]("WithBackoff", min, max)
}

// Source discovers the endpoints registered under key prefixes of etcd. It
// implements core.Source. Safe for concurrent use.
type Source struct {
	client *clientv3.Client
	own    bool // New made the client: Close closes it
	opts   options
}

var _ core.Source = (*Source)(nil)

func newOptions(opts []Option) (options, error) {
	o := options{Common: kit.Common{Log: zap.NewNop(), Backoff: kit.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}},
		format: Auto, scheme: "grpc", unreach: 2 * time.Second, dial: 5 * time.Second}
	if err := kit.Apply(&o, opts...); err != nil {
		return o, fmt.Errorf("etcd: %w: %w", err, core.ErrInvalid)
	}
	return o, nil
}

// New returns a source reading etcd at endpoints ("127.0.0.1:2379",
// "https://etcd-0:2379"; several for a cluster). It does not wait for etcd:
// a target watched while etcd cannot be reached fails (unavailable) until
// it can. Close it when done.
func New(endpoints []string, opts ...Option) (*Source, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("etcd: New needs at least one endpoint: %w", core.ErrInvalid)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: o.dial, TLS: o.tls,
		Username: o.username, Password: o.password,
		Logger: o.Log.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		// Keepalive pings find a silent etcd; the client reconnects and
		// resumes its watches by itself.
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
		PermitWithoutStream: true,
		// Reconnect within a second or two of etcd coming back, not after
		// gRPC's default backoff of up to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: client for %v: %w", endpoints, err)
	}
	return &Source{client: c, own: true, opts: o}, nil
}

// NewForClient returns a source reading etcd through client (which stays
// the caller's: Close does not close it).
func NewForClient(client *clientv3.Client, opts ...Option) (*Source, error) {
	if client == nil {
		return nil, fmt.Errorf("etcd: NewForClient needs a client: %w", core.ErrInvalid)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	return &Source{client: client, opts: o}, nil
}

// Close closes the client New made.
func (s *Source) Close() error {
	if s.own {
		return s.client.Close()
	}
	return nil
}

// Target reads a target: a key prefix, without its trailing "/"
// ("greeter", "/microservices/greeter", "user.rpc").
func (s *Source) Target(text string) (core.Target, error) { return ParseTarget(text) }

// ParseTarget reads a target: a key prefix, without its trailing "/", or
// a gRPC target naming one ("etcd:///greeter", "etcd:////microservices/
// greeter" for a prefix that starts with "/").
func ParseTarget(text string) (core.Target, error) {
	if i := strings.Index(text, "://"); i > 0 && !strings.ContainsAny(text[:i], "/ ") {
		rest := text[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return core.Target{}, fmt.Errorf("etcd: target %q: want scheme:///prefix: %w", text, core.ErrInvalid)
		}
		text = rest[j+1:] // the authority (empty, or not used) and its slash dropped
	}
	switch {
	case text == "" || text == "/":
		return core.Target{}, fmt.Errorf("etcd: target %q: want a key prefix (\"greeter\"): %w", text, core.ErrInvalid)
	case strings.HasSuffix(text, "/"):
		return core.Target{}, fmt.Errorf("etcd: target %q: without the trailing / (its keys are %q + name): %w", text, text, core.ErrInvalid)
	case strings.ContainsAny(text, " \t\n"):
		return core.Target{}, fmt.Errorf("etcd: target %q: a key prefix has no spaces: %w", text, core.ErrInvalid)
	}
	return core.Target{Name: text}, nil
}

// errCompacted: the watch's revision was compacted away; read again.
var errCompacted = errors.New("etcd: the watched revision was compacted")

// Watch implements core.Source: it reads every key under the target's
// prefix, publishes their endpoints, and follows them with a watch from
// that read's revision until ctx ends.
func (s *Source) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	if _, err := ParseTarget(t.Name); err != nil || t.Namespace != "" || t.Port != "" {
		return fmt.Errorf("etcd: target %s: a key prefix only: %w", t, core.ErrInvalid)
	}
	prefix := t.Name + "/"
	log := s.opts.Log.With(zap.String("prefix", prefix))
	w := &watcher{s: s, prefix: prefix, pub: pub, log: log, keys: map[string]*core.Endpoint{}, bad: map[string]string{}}
	attempt := 0
	for ctx.Err() == nil {
		rev, err := w.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			pub.Fail(fmt.Errorf("etcd: read %s: %v: %w", prefix, err, core.ErrUnavailable))
			if !kit.Sleep(ctx, s.opts.Backoff.Delay(attempt)) {
				return nil
			}
			attempt++
			continue
		}
		attempt = 0
		err = w.watch(ctx, rev)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errCompacted):
			log.Info("etcd: watch revision compacted; reading the prefix again")
		default:
			pub.Fail(fmt.Errorf("etcd: watch %s: %v: %w", prefix, err, core.ErrUnavailable))
			log.Warn("etcd: unreachable; the last endpoints stay, stale", zap.Error(err))
			if !s.waitReachable(ctx) {
				return nil
			}
		}
	}
	return nil
}

// watcher is one target's view of its prefix.
type watcher struct {
	s      *Source
	prefix string
	pub    core.Publisher
	log    *zap.Logger

	keys map[string]*core.Endpoint // key -> endpoint
	bad  map[string]string         // key -> why its value is unusable
}

// list reads the whole prefix and publishes it; it returns the read's
// revision.
func (w *watcher) list(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := w.s.client.Get(rctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	clear(w.keys)
	clear(w.bad)
	for _, kv := range resp.Kvs {
		w.put(string(kv.Key), kv.Value)
	}
	w.publish()
	return resp.Header.Revision, nil
}

func (w *watcher) put(key string, value []byte) {
	e, err := endpoint(key, value, w.s.opts.format, w.s.opts.scheme)
	if err != nil {
		delete(w.keys, key)
		w.bad[key] = err.Error()
		return
	}
	delete(w.bad, key)
	w.keys[key] = e
}

func (w *watcher) del(key string) {
	delete(w.keys, key)
	delete(w.bad, key)
}

// publish publishes the endpoints; unusable values leave the set stale,
// naming the first key (the rest are counted).
func (w *watcher) publish() {
	keys := make([]string, 0, len(w.keys))
	for k := range w.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	eps := make([]*core.Endpoint, 0, len(keys))
	seen := map[string]bool{}
	for _, k := range keys {
		e := w.keys[k]
		hp := e.HostPort()
		if seen[hp] {
			continue // one address, one endpoint: the first key's
		}
		seen[hp] = true
		eps = append(eps, e)
	}
	set, err := core.NewSet(eps...)
	if err != nil {
		w.pub.Fail(fmt.Errorf("etcd: %s: %v: %w", w.prefix, err, core.ErrInvalid))
		return
	}
	if len(w.bad) == 0 {
		w.pub.Publish(set)
		return
	}
	bad := make([]string, 0, len(w.bad))
	for k := range w.bad {
		bad = append(bad, k)
	}
	slices.Sort(bad)
	reason := fmt.Sprintf("etcd: key %s: %s", bad[0], w.bad[bad[0]])
	if len(bad) > 1 {
		reason += fmt.Sprintf(" (and %d more unusable keys)", len(bad)-1)
	}
	w.log.Warn("etcd: an unusable value; its key left out, the others kept", zap.String("key", bad[0]), zap.String("why", w.bad[bad[0]]))
	w.pub.PublishStale(set, fmt.Errorf("%s: %w", reason, core.ErrInvalid))
}

// watch follows the prefix from rev+1, publishing after each batch of
// events. It returns errCompacted when rev is gone, or an error when etcd
// has been unreachable for WithUnreachableAfter.
func (w *watcher) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Watch blocks until etcd opens the watch: while etcd cannot be
	// reached, the health check below must go on, so it is asked for in a
	// goroutine of its own (it returns once wctx ends, at the latest).
	opened := make(chan clientv3.WatchChan, 1)
	go func() { opened <- w.s.client.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) }()
	var wch clientv3.WatchChan // nil (never ready) until opened
	health := time.NewTicker(w.s.opts.unreach / 4)
	defer health.Stop()
	var downSince time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wch = <-opened:
		case <-health.C:
			if w.s.reachable() {
				downSince = time.Time{}
				continue
			}
			if downSince.IsZero() {
				downSince = time.Now()
			}
			if time.Since(downSince) >= w.s.opts.unreach {
				return fmt.Errorf("no connection to etcd for %v", time.Since(downSince).Round(time.Millisecond))
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("the watch ended")
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("%w (at %d, wanted %d)", errCompacted, resp.CompactRevision, rev+1)
			}
			if err := resp.Err(); err != nil {
				return err
			}
			for _, ev := range resp.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					w.put(string(ev.Kv.Key), ev.Kv.Value)
				case clientv3.EventTypeDelete:
					w.del(string(ev.Kv.Key))
				}
				rev = ev.Kv.ModRevision
			}
			if len(resp.Events) > 0 {
				w.publish()
			}
		}
	}
}

// reachable reports whether the client's connection is up.
func (s *Source) reachable() bool {
	st := s.client.ActiveConnection().GetState()
	return st == connectivity.Ready || st == connectivity.Idle
}

// waitReachable waits until etcd answers (a read of one key), probing
// with the backoff.
func (s *Source) waitReachable(ctx context.Context) bool {
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := s.client.Get(pctx, "disco-probe", clientv3.WithCountOnly())
		cancel()
		if err == nil {
			return true
		}
		if !kit.Sleep(ctx, min(s.opts.Backoff.Delay(attempt), time.Second)) {
			return false
		}
	}
}
