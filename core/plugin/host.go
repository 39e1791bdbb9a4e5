package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
	"github.com/disco-lb/disco/core/wire"
)

// Option configures a plugin host. A value out of range makes NewSource
// or NewSink fail with an error naming the option and what it allows.
type Option = kit.Option[*config]

type config struct {
	kit.Common   // WithLogger; WithRestart's backoff
	args         []string
	maxRestarts  int
	healthyAfter time.Duration
	startTimeout time.Duration
	health       time.Duration
	progress     time.Duration
	maxMsg       int
}

// WithArgs sets the plugin binary's arguments.
func WithArgs(args ...string) Option {
	return func(c *config) error { c.args = args; return nil }
}

// WithLogger sets the host's logger (nil: none); the plugin's own log lines
// (hclog JSON on its stderr, see Logger) arrive through it, named after the
// binary, at their level, and so do the lines it prints on stdout.
var WithLogger = kit.WithLogger[*config]

// WithRestart sets the jittered backoff between restarts of a plugin that
// exited or hung (0 < min <= max <= 24h; default 100ms to 5s), and how many
// restarts in a row (each run ended within a minute of its start) are tried
// before the host gives up on the binary (1 to 1000; default 5): its
// watches then end, its sink fails, with an error naming the binary, how
// many times it was started and its last failure.
func WithRestart(min, max time.Duration, maxRestarts int) Option {
	return func(c *config) error {
		if err := kit.CheckBackoff("WithRestart", min, max); err != nil {
			return err
		}
		if err := kit.Between("WithRestart", maxRestarts, 1, 1000); err != nil {
			return err
		}
		c.Backoff, c.maxRestarts = kit.Backoff{Min: min, Max: max}, maxRestarts
		return nil
	}
}

// WithHealthCheck sets how often the host checks that the plugin answers
// (more than 0, at most 1h; default 1s); one that does not answer within
// that time is killed and restarted.
func WithHealthCheck(every time.Duration) Option {
	return kit.Checked(kit.Positive("WithHealthCheck", every, time.Hour), func(c *config) { c.health = every })
}

// WithProgressTimeout bounds how long a plugin may make no progress (0 to
// 24h; default 1m; 0 turns the bound off): a source plugin that sends
// nothing for a new watch, or a sink plugin that does not answer an update,
// within d. The target is marked stale (a source) or the update failed (a
// sink), and the plugin is killed and restarted: a plugin stuck inside its
// Watch or Accept answers its health check all the same.
func WithProgressTimeout(d time.Duration) Option {
	return kit.Checked(kit.NonNegative("WithProgressTimeout", d, 24*time.Hour), func(c *config) { c.progress = d })
}

// WithMaxMessageSize bounds one message between the host and the plugin
// (64 KiB to 2 GiB - 1, protobuf's own limit, which is the default; gRPC's
// 4 MiB default is raised on both sides). An update larger than that fails
// with a permanent error saying so, rather than being retried for ever.
func WithMaxMessageSize(bytes int) Option {
	return kit.Checked(kit.Between("WithMaxMessageSize", bytes, 64<<10, math.MaxInt32), func(c *config) { c.maxMsg = bytes })
}

// ErrGaveUp is wrapped by the errors of a plugin the host stopped
// restarting.
var ErrGaveUp = errors.New("gave up restarting")

// proc is one plugin binary the host runs, restarts and health-checks.
type proc struct {
	path, kind string
	cfg        config
	log        *zap.Logger

	startMu sync.Mutex // one start at a time
	mu      sync.Mutex
	client  *goplugin.Client
	run     *procRunner
	rpc     goplugin.ClientProtocol
	raw     any
	gen     uint64
	started time.Time
	streak  int    // processes started in a row, each run ending soon after its start
	lastErr string // the last real failure: a start error, an exit status and stderr, a kill
	killed  string // why the host killed the running process, if it did
	gaveUp  error
	closed  bool

	onRestart func(ctx context.Context) // after every restart
	ctx       context.Context           // ends at close
	cancel    context.CancelFunc
	done      chan struct{} // closed when monitor returns
}

func newProc(path, kind string, opts []Option) (*proc, error) {
	c := config{Common: kit.Common{Log: zap.NewNop(), Backoff: kit.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}},
		maxRestarts: 5, healthyAfter: time.Minute, startTimeout: 10 * time.Second, health: time.Second, progress: time.Minute, maxMsg: math.MaxInt32}
	if err := kit.Apply(&c, opts...); err != nil {
		return nil, fmt.Errorf("plugin %s: %w: %w", path, err, core.ErrInvalid)
	}
	p := &proc{path: path, kind: kind, cfg: c, log: c.Log.Named(filepath.Base(path)), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if err := p.start(); err != nil {
		return nil, err
	}
	go p.monitor()
	return p, nil
}

var incompatible = regexp.MustCompile(`(?i)incompatible API version with plugin\. Plugin version: (\d+)`)

// start runs the binary, completes go-plugin's handshake (cookie, protocol
// version, AutoMTLS) and dispenses the plugin. Every call is a start of the
// process, counted in the streak.
func (p *proc) start() error {
	p.mu.Lock()
	if !p.started.IsZero() && time.Since(p.started) >= p.cfg.healthyAfter {
		p.streak = 0 // the last run was a healthy one
	}
	p.streak++
	p.started = time.Now()
	p.mu.Unlock()

	var run *procRunner
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{ProtocolVersion: {SourcePlugin: &sourcePlugin{}, SinkPlugin: &sinkPlugin{}}},
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, _ string) (runner.Runner, error) {
			run = newProcRunner(p.path, p.cfg.args, cmd.Env, p.log)
			return run, nil
		},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           newHCLog(p.cfg.Log), // go-plugin names the plugin's own lines after the binary
		StartTimeout:     p.cfg.startTimeout,
		Stderr:           io.Discard,
		SyncStdout:       io.Discard,
		SyncStderr:       io.Discard,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(p.cfg.maxMsg), grpc.MaxCallSendMsgSize(p.cfg.maxMsg))},
	})
	fail := func(err error) error {
		for i := 0; i < 20 && !client.Exited(); i++ {
			time.Sleep(10 * time.Millisecond) // did it exit, or is it still talking?
		}
		exited := client.Exited()
		client.Kill()
		if m := incompatible.FindStringSubmatch(err.Error()); m != nil {
			err = fmt.Errorf("plugin %s speaks disco plugin protocol version %s, this host speaks version %d: build the plugin against this release's core/plugin (%w)", p.path, m[1], ProtocolVersion, err)
		} else if exited {
			how := ""
			if run != nil {
				how = " (" + run.exit() + ")"
			}
			err = fmt.Errorf("plugin %s: the process exited during go-plugin's handshake%s (a binary that is no disco plugin, or one started without its handshake cookie): %w", p.path, how, err)
		} else {
			err = fmt.Errorf("plugin %s: %w", p.path, err)
		}
		p.mu.Lock()
		p.lastErr = err.Error()
		p.mu.Unlock()
		return err
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(err)
	}
	raw, err := rpc.Dispense(p.kind)
	if err != nil {
		return fail(fmt.Errorf("it serves no %s: %w", p.kind, err))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		client.Kill()
		return errClosed
	}
	p.client, p.run, p.rpc, p.raw = client, run, rpc, raw
	p.gen++
	return nil
}

var errClosed = errors.New("plugin: closed")

// get returns the running plugin and its generation, restarting it (after
// a backoff) if it exited or was killed.
func (p *proc) get(ctx context.Context) (any, uint64, error) {
	for {
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			return nil, 0, core.Permanent(errClosed)
		case p.gaveUp != nil:
			err := p.gaveUp
			p.mu.Unlock()
			return nil, 0, core.Permanent(err)
		case p.client != nil && !p.client.Exited():
			raw, gen := p.raw, p.gen
			p.mu.Unlock()
			return raw, gen, nil
		}
		p.mu.Unlock()
		if err := p.restart(ctx); err != nil {
			return nil, 0, err
		}
	}
}

// kill SIGKILLs generation gen of the plugin (through its process handle),
// recording why: the next get restarts it.
func (p *proc) kill(gen uint64, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen == gen && p.client != nil && !p.client.Exited() {
		p.log.Warn("plugin: killing it", zap.String("reason", why))
		p.killed = why
		_ = p.run.Kill(context.Background())
	}
}

// broken tells whether generation gen is gone, after one of its calls
// failed in the transport: it exited, or it does not answer a ping (then
// it is killed). A plugin that answers is left alone: the failure was the
// call's.
func (p *proc) broken(gen uint64) bool {
	p.mu.Lock()
	client, rpc := p.client, p.rpc
	current := p.gen == gen && client != nil
	p.mu.Unlock()
	if !current || client.Exited() {
		return true
	}
	if err := p.ping(rpc); err != nil {
		p.kill(gen, "its connection broke and it does not answer: "+err.Error())
		return true
	}
	return false
}

// ping checks that the plugin answers within the health-check period.
func (p *proc) ping(rpc goplugin.ClientProtocol) error {
	pinged := make(chan error, 1)
	go func() { pinged <- rpc.Ping() }()
	t := time.NewTimer(p.cfg.health)
	defer t.Stop()
	select {
	case err := <-pinged:
		return err
	case <-t.C:
		return errors.New("no answer to its health check")
	case <-p.ctx.Done():
		return errClosed
	}
}

// restart starts the binary again after a backoff; a bound on starts in a
// row, each soon ending, ends in ErrGaveUp.
func (p *proc) restart(ctx context.Context) error {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	p.mu.Lock()
	if p.client != nil && !p.client.Exited() {
		p.mu.Unlock()
		return nil // someone else restarted it
	}
	if p.gaveUp != nil {
		err := p.gaveUp
		p.mu.Unlock()
		return core.Permanent(err)
	}
	if p.client != nil {
		p.lastErr = p.run.exit()
		if p.killed != "" {
			p.lastErr = p.killed + " (" + p.lastErr + ")"
		}
		p.killed = ""
		old := p.client
		p.client = nil
		p.mu.Unlock()
		old.Kill() // its goroutines and socket; the process is gone
		p.mu.Lock()
	}
	quick := time.Since(p.started) < p.cfg.healthyAfter
	if quick && p.streak > p.cfg.maxRestarts {
		p.gaveUp = fmt.Errorf("plugin %s: %w: started %d times in a row, each run ending within %v of its start; last: %s",
			p.path, ErrGaveUp, p.streak, p.cfg.healthyAfter, p.lastErr)
		p.log.Error("plugin: giving up", zap.Error(p.gaveUp))
		err := p.gaveUp
		p.mu.Unlock()
		return core.Permanent(err)
	}
	attempt := 0
	if quick {
		attempt = p.streak - 1
	}
	last := p.lastErr
	p.mu.Unlock()
	delay := p.cfg.Backoff.Delay(attempt)
	p.log.Warn("plugin: restarting", zap.String("after", last), zap.Duration("in", delay))
	if !kit.Sleep(ctx, delay) {
		return ctx.Err()
	}
	if p.ctx.Err() != nil {
		return core.Permanent(errClosed)
	}
	if err := p.start(); err != nil {
		p.log.Warn("plugin: restart failed", zap.Error(err))
		return fmt.Errorf("%w: %w", err, core.ErrUnavailable)
	}
	p.log.Info("plugin: restarted")
	if p.onRestart != nil {
		go p.onRestart(p.ctx)
	}
	return nil
}

// monitor finds a plugin that exited or stopped answering, kills it and
// restarts it.
func (p *proc) monitor() {
	defer close(p.done)
	t := time.NewTicker(p.cfg.health)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		client, rpc, gen, gaveUp := p.client, p.rpc, p.gen, p.gaveUp
		p.mu.Unlock()
		if gaveUp != nil {
			continue
		}
		if client == nil || client.Exited() {
			_ = p.restart(p.ctx)
			continue
		}
		if err := p.ping(rpc); err != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.kill(gen, "its health check failed: "+err.Error())
		}
	}
}

// close ends the plugin process and waits for the host's goroutines.
func (p *proc) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
	p.startMu.Lock() // a start in progress ends first (and, seeing closed, kills what it started)
	defer p.startMu.Unlock()
	p.mu.Lock()
	client, run := p.client, p.run
	p.mu.Unlock()
	if client != nil {
		stop(client, run)
	}
}

// stop ends the plugin: gracefully if it exits within 2 s, else by
// SIGKILL through its process handle.
func stop(c *goplugin.Client, run *procRunner) {
	done := make(chan struct{})
	go func() { defer close(done); c.Kill() }()
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = run.Kill(context.Background())
		<-done
	}
}

// Source is a core.Source served by a plugin binary.
type Source struct{ p *proc }

var _ core.Source = (*Source)(nil)

// NewSource starts the plugin binary at path and checks that it serves a
// source; errors name the binary and what was wrong (missing, not
// executable, not a disco plugin, another protocol version). Close it when
// done: the plugin process ends with it.
func NewSource(path string, opts ...Option) (*Source, error) {
	p, err := newProc(path, SourcePlugin, opts)
	if err != nil {
		return nil, err
	}
	return &Source{p: p}, nil
}

// Close ends the plugin process.
func (s *Source) Close() error { s.p.close(); return nil }

// Watch implements core.Source: a watch inside the plugin, its events
// published here. The plugin's Watch returning ends this one with its error,
// classified as in process (a retryable error is retried by the hub with a
// backoff, the plugin process untouched). If the plugin dies, or makes no
// progress, the last good state stays (stale) and the target is watched
// again in the restarted plugin. Cancelling ctx cancels the watch inside
// the plugin.
func (s *Source) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	req := &pb.WatchRequest{Target: targetToPB(t)}
	for {
		raw, gen, err := s.p.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if core.IsPermanent(err) {
				return err
			}
			pub.Fail(err)
			continue
		}
		err = s.stream(ctx, raw.(pb.SourceServiceClient), req, pub)
		if ctx.Err() != nil {
			return nil
		}
		var end watchEnd
		var bad badEvent
		switch {
		case errors.As(err, &end):
			return end.err // the plugin's Watch returned: core's rule decides
		case errors.Is(err, io.EOF):
			return nil // the stream ended without an END event: nothing more to say
		case errors.Is(err, errNoProgress):
			why := fmt.Sprintf("sent nothing for %s within %v", t, s.p.cfg.progress)
			pub.Fail(fmt.Errorf("plugin %s %s; restarting it: %w", s.p.path, why, core.ErrUnavailable))
			s.p.kill(gen, why)
			continue
		case errors.As(err, &bad):
			// The plugin sent something the host cannot use: keep the last
			// good set (stale, naming what was wrong) and watch anew after
			// a backoff, the process untouched.
			return core.Retry(fmt.Errorf("plugin %s: watch of %s: %w", s.p.path, t, bad.err), 0)
		case status.Code(err) == codes.ResourceExhausted:
			return core.Permanent(fmt.Errorf("plugin %s: watch of %s: a message over the size limit: %v", s.p.path, t, err))
		case s.p.broken(gen):
			pub.Fail(fmt.Errorf("plugin %s: %v (restarting it): %w", s.p.path, err, core.ErrUnavailable))
			continue
		}
		return fmt.Errorf("plugin %s: watch of %s: %v: %w", s.p.path, t, err, core.ErrUnavailable)
	}
}

// watchEnd is the plugin's Watch returning (err nil or its error).
type watchEnd struct{ err error }

func (watchEnd) Error() string { return "watch ended" }

// badEvent is an event the host cannot use.
type badEvent struct{ err error }

func (b badEvent) Error() string { return b.err.Error() }

var errNoProgress = errors.New("plugin: no progress")

// stream runs one watch stream, rebuilding the set from its events. It
// returns watchEnd, badEvent, errNoProgress or the transport's error.
func (s *Source) stream(ctx context.Context, c pb.SourceServiceClient, req *pb.WatchRequest, pub core.Publisher) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled sync.Once
	noProgress := false
	if d := s.p.cfg.progress; d > 0 {
		t := time.AfterFunc(d, func() { stalled.Do(func() { noProgress = true; cancel() }) })
		defer t.Stop()
	}
	heard := func() { stalled.Do(func() {}) } // the plugin answered: no more bound
	st, err := c.Watch(ctx, req)
	if err != nil {
		return err
	}
	var cur core.Set
	has := false
	for {
		ev, err := st.Recv()
		if err != nil {
			heard()
			if noProgress {
				return errNoProgress
			}
			return err
		}
		heard()
		switch ev.Kind {
		case pb.EventKind_EVENT_KIND_END:
			return watchEnd{err: errorFromPB(s.p.path, ev.Error)}
		case pb.EventKind_EVENT_KIND_FAIL:
			if ev.Error == nil {
				return badEvent{fmt.Errorf("a FAIL event without an error: %w", core.ErrInvalid)}
			}
			pub.Fail(errorFromPB(s.p.path, ev.Error))
		case pb.EventKind_EVENT_KIND_PUBLISH, pb.EventKind_EVENT_KIND_PUBLISH_STALE:
			next, err := apply(cur, has, ev)
			if err != nil {
				return badEvent{err}
			}
			cur, has = next, true
			if ev.Kind == pb.EventKind_EVENT_KIND_PUBLISH_STALE && ev.Error != nil {
				pub.PublishStale(cur, errorFromPB(s.p.path, ev.Error))
			} else {
				pub.Publish(cur)
			}
		default:
			return badEvent{fmt.Errorf("an event of kind %v: %w", ev.Kind, core.ErrInvalid)}
		}
	}
}

// apply rebuilds the plugin's set from an event. Errors wrap ErrInvalid
// and say what was wrong.
func apply(cur core.Set, has bool, ev *pb.WatchResponse) (core.Set, error) {
	eps, err := endpointsFromPB(ev.Upserts)
	if err != nil {
		return core.Set{}, err
	}
	var next core.Set
	switch {
	case ev.Full:
		next, err = core.NewSet(eps...)
	case !has:
		return core.Set{}, fmt.Errorf("a delta before the first full set: %w", core.ErrInvalid)
	default:
		next, err = cur.Without(ev.Removed...).With(eps...)
	}
	if err != nil {
		return core.Set{}, err
	}
	if next.Len() != int(ev.Count) {
		return core.Set{}, fmt.Errorf("%d endpoints after the event, the plugin counts %d: %w", next.Len(), ev.Count, core.ErrInvalid)
	}
	return next, nil
}

// Sink is a core.Sink served by a plugin binary.
type Sink struct {
	p *proc

	mu    sync.Mutex
	locks map[core.Target]*sync.Mutex
	sent  map[core.Target]core.Update // per target, the newest update that may have reached the plugin
}

var _ core.Sink = (*Sink)(nil)

// NewSink starts the plugin binary at path and checks that it serves a
// sink. After the plugin restarts, the host replays to it at once, per
// target, the newest state that may have reached the old process (never an
// older one). Close it when done.
func NewSink(path string, opts ...Option) (*Sink, error) {
	s := &Sink{locks: map[core.Target]*sync.Mutex{}, sent: map[core.Target]core.Update{}}
	p, err := newProc(path, SinkPlugin, opts)
	if err != nil {
		return nil, err
	}
	s.p = p
	p.onRestart = s.replay
	return s, nil
}

// Close ends the plugin process.
func (s *Sink) Close() error { s.p.close(); return nil }

func (s *Sink) lock(t core.Target) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[t]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[t] = l
	}
	return l
}

// Accept implements core.Sink: the update crosses in the delta form, and
// the plugin's answer, its errors included, comes back as data, classified
// as in process. Only a broken transport or a plugin making no progress
// costs the process (restarted, the full state replayed).
func (s *Sink) Accept(ctx context.Context, u core.Update) error {
	l := s.lock(u.Target)
	l.Lock()
	defer l.Unlock()
	raw, gen, err := s.p.get(ctx)
	if err != nil {
		return err
	}
	req := wireToPB(wire.From(u, wire.DeltaForm))
	if n := proto.Size(req); n > s.p.cfg.maxMsg {
		return core.Permanent(fmt.Errorf("plugin %s: update of %s seq %d is %d bytes, over the %d-byte message limit", s.p.path, u.Target, u.Seq, n, s.p.cfg.maxMsg))
	}
	s.mu.Lock()
	s.sent[u.Target] = u
	s.mu.Unlock()
	resp, err := s.call(ctx, raw.(pb.SinkServiceClient), req)
	switch {
	case err == nil:
		return errorFromPB(s.p.path, resp.Error)
	case ctx.Err() != nil:
		return ctx.Err()
	case status.Code(err) == codes.ResourceExhausted:
		return core.Permanent(fmt.Errorf("plugin %s: update of %s seq %d: over the plugin's message size limit: %v", s.p.path, u.Target, u.Seq, err))
	case errors.Is(err, errNoProgress):
		why := fmt.Sprintf("no answer to the update of %s seq %d within %v", u.Target, u.Seq, s.p.cfg.progress)
		s.p.kill(gen, why)
		return fmt.Errorf("plugin %s: %s (restarting it): %w", s.p.path, why, core.ErrResync)
	case s.p.broken(gen):
		// The restarted plugin holds nothing: the full state follows.
		return fmt.Errorf("plugin %s: %v: %w", s.p.path, err, core.ErrResync)
	}
	return fmt.Errorf("plugin %s: update of %s seq %d: %v: %w", s.p.path, u.Target, u.Seq, err, core.ErrUnavailable)
}

// call sends one update, bounded by the progress timeout.
func (s *Sink) call(ctx context.Context, c pb.SinkServiceClient, req *pb.UpdateRequest) (*pb.UpdateResponse, error) {
	if d := s.p.cfg.progress; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, errNoProgress)
		defer cancel()
	}
	resp, err := c.Update(ctx, req)
	if err != nil && errors.Is(context.Cause(ctx), errNoProgress) {
		return nil, errNoProgress
	}
	return resp, err
}

// replay sends the restarted plugin, per target, the newest state that may
// have reached the old process, from nothing.
func (s *Sink) replay(ctx context.Context) {
	s.mu.Lock()
	targets := make([]core.Target, 0, len(s.sent))
	for t := range s.sent {
		targets = append(targets, t)
	}
	s.mu.Unlock()
	for _, t := range targets {
		l := s.lock(t)
		l.Lock()
		s.mu.Lock()
		cur := s.sent[t]
		s.mu.Unlock()
		raw, _, err := s.p.get(ctx)
		if err == nil {
			full := cur
			full.BaseSeq = 0
			full.Delta = core.Delta{Added: cur.State.Endpoints.Slice()}
			var resp *pb.UpdateResponse
			if resp, err = s.call(ctx, raw.(pb.SinkServiceClient), wireToPB(wire.From(full, wire.DeltaForm))); err == nil {
				err = errorFromPB(s.p.path, resp.Error)
			}
		}
		l.Unlock()
		if err != nil {
			s.p.log.Warn("plugin: replay after restart failed; the next update will resync", zap.Stringer("target", t), zap.Error(err))
		}
	}
}
