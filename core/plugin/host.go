package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
)

// Option configures a plugin host.
type Option func(*config)

type config struct {
	args         []string
	log          *zap.Logger
	backoff      core.Backoff
	maxRestarts  int
	healthyAfter time.Duration
	startTimeout time.Duration
	health       time.Duration
}

// WithArgs sets the plugin binary's arguments.
func WithArgs(args ...string) Option { return func(c *config) { c.args = args } }

// WithLogger sets the host's logger; the plugin's own log lines (hclog
// JSON on its stderr, see Logger) arrive through it, named after the
// binary, at their level.
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithRestart sets the jittered backoff between restarts of a plugin that
// exited or hung (default 100ms to 5s), and how many restarts in a row
// (each ended within a minute of its start) are tried before the host gives
// up on the binary (default 5): its watches then end, its sink fails, with
// an error naming the binary and the last failure.
func WithRestart(min, max time.Duration, maxRestarts int) Option {
	return func(c *config) {
		c.backoff = core.Backoff{Min: min, Max: max}
		if maxRestarts > 0 {
			c.maxRestarts = maxRestarts
		}
	}
}

// WithHealthCheck sets how often the host checks that the plugin answers
// (default 1s); one that does not answer within that time is killed and
// restarted.
func WithHealthCheck(every time.Duration) Option {
	return func(c *config) {
		if every > 0 {
			c.health = every
		}
	}
}

// ErrGaveUp is wrapped by the errors of a plugin the host stopped
// restarting.
var ErrGaveUp = errors.New("plugin: gave up restarting")

// proc is one plugin binary the host runs, restarts and health-checks.
type proc struct {
	path, kind string
	cfg        config
	log        *zap.Logger

	startMu sync.Mutex // one start at a time
	mu      sync.Mutex
	client  *goplugin.Client
	rpc     goplugin.ClientProtocol
	raw     any
	gen     uint64
	started time.Time
	crashes int // restarts in a row, each soon after its start
	lastErr error
	gaveUp  error
	closed  bool

	onRestart func(ctx context.Context) // after a restart that followed a crash
	ctx       context.Context           // ends at close
	cancel    context.CancelFunc
	done      chan struct{} // closed when monitor returns
}

func newProc(path, kind string, opts []Option) (*proc, error) {
	c := config{log: zap.NewNop(), backoff: core.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}, maxRestarts: 5,
		healthyAfter: time.Minute, startTimeout: 10 * time.Second, health: time.Second}
	for _, o := range opts {
		o(&c)
	}
	p := &proc{path: path, kind: kind, cfg: c, log: c.log.With(zap.String("plugin", path)), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if err := p.start(); err != nil {
		return nil, err
	}
	go p.monitor()
	return p, nil
}

// start runs the binary, completes go-plugin's handshake (cookie, protocol
// version, AutoMTLS) and dispenses the plugin.
func (p *proc) start() error {
	cmd := exec.Command(p.path, p.cfg.args...)
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{ProtocolVersion: {SourcePlugin: &sourcePlugin{}, SinkPlugin: &sinkPlugin{}}},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           newHCLog(p.log.Named(filepath.Base(p.path))),
		StartTimeout:     p.cfg.startTimeout,
		Stderr:           io.Discard,
		SyncStdout:       io.Discard,
		SyncStderr:       io.Discard,
	})
	fail := func(err error) error {
		for i := 0; i < 20 && !client.Exited(); i++ {
			time.Sleep(10 * time.Millisecond) // did it exit, or is it still talking?
		}
		exited := client.Exited()
		client.Kill()
		if exited {
			return fmt.Errorf("plugin %s: the process exited during go-plugin's handshake (a binary that is no disco plugin, or one started without its handshake cookie): %w", p.path, err)
		}
		return fmt.Errorf("plugin %s: %w", p.path, err)
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
	p.client, p.rpc, p.raw, p.started = client, rpc, raw, time.Now()
	p.gen++
	return nil
}

var errClosed = errors.New("plugin: closed")

// get returns the running plugin and its generation, restarting it (after
// a backoff) if it exited or was marked dead.
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

// dead marks generation gen as gone (its RPCs failed): the next get
// restarts it.
func (p *proc) dead(gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen == gen && p.client != nil {
		hardKill(p.client) // its RPCs failed: do not wait on a graceful shutdown
	}
}

// restart starts the binary again after a backoff; a bound on restarts in
// a row ends in ErrGaveUp.
func (p *proc) restart(ctx context.Context) error {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	p.mu.Lock()
	if p.client != nil && !p.client.Exited() {
		p.mu.Unlock()
		return nil // someone else restarted it
	}
	if p.client != nil {
		kill(p.client)
		p.client = nil
		if time.Since(p.started) >= p.cfg.healthyAfter {
			p.crashes = 0
		}
	}
	p.crashes++
	n := p.crashes
	if n > p.cfg.maxRestarts {
		p.gaveUp = fmt.Errorf("plugin %s: %w after %d restarts in a row; last: %v", p.path, ErrGaveUp, n-1, p.lastErr)
		p.log.Error("plugin: giving up", zap.Error(p.gaveUp))
		p.mu.Unlock()
		return core.Permanent(p.gaveUp)
	}
	p.mu.Unlock()
	delay := p.cfg.backoff.Delay(n - 1)
	p.log.Warn("plugin: exited; restarting", zap.Int("restart", n), zap.Duration("after", delay))
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return core.Permanent(errClosed)
	case <-t.C:
	}
	if err := p.start(); err != nil {
		p.mu.Lock()
		p.lastErr = err
		p.started = time.Now()
		p.mu.Unlock()
		p.log.Warn("plugin: restart failed", zap.Error(err))
		return fmt.Errorf("%w: %w", err, core.ErrUnavailable)
	}
	p.log.Info("plugin: restarted", zap.Int("restart", n))
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
		client, rpc, gaveUp := p.client, p.rpc, p.gaveUp
		p.mu.Unlock()
		if gaveUp != nil {
			continue
		}
		if client == nil || client.Exited() {
			_ = p.restart(p.ctx)
			continue
		}
		pinged := make(chan error, 1)
		go func() { pinged <- rpc.Ping() }()
		select {
		case err := <-pinged:
			if err == nil {
				continue
			}
			p.log.Warn("plugin: health check failed; killing it", zap.Error(err))
		case <-time.After(p.cfg.health):
			p.log.Warn("plugin: not answering its health check; killing it")
		case <-p.ctx.Done():
			return
		}
		p.mu.Lock()
		p.lastErr = errors.New("stopped answering its health check")
		p.mu.Unlock()
		hardKill(client) // a graceful shutdown would wait on it forever
		client.Kill()
	}
}

// hardKill SIGKILLs the plugin's process.
func hardKill(c *goplugin.Client) {
	if rc := c.ReattachConfig(); rc != nil && rc.Pid > 0 {
		if proc, err := os.FindProcess(rc.Pid); err == nil {
			_ = proc.Kill()
		}
	}
}

// kill ends the plugin: gracefully if it answers within 2 s, else by
// SIGKILL.
func kill(c *goplugin.Client) {
	done := make(chan struct{})
	go func() { defer close(done); c.Kill() }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		hardKill(c)
		<-done
	}
}

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
	client := p.client
	p.mu.Unlock()
	if client != nil {
		kill(client)
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
// published here. If the plugin dies the last good state stays (stale) and
// the target is watched again in the restarted plugin; cancelling ctx
// cancels the watch inside the plugin.
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
		err = s.stream(ctx, raw.(pb.SourceClient), req, pub)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == io.EOF:
			return nil // the plugin's Watch returned nil
		}
		code := status.Code(err)
		if code == codes.Unavailable || code == codes.Canceled || code == codes.Internal || errors.Is(err, errProtocol) {
			s.p.dead(gen)
			pub.Fail(fmt.Errorf("plugin %s: %v (restarting it): %w", s.p.path, err, core.ErrUnavailable))
			continue
		}
		return fromStatus(s.p.path, err)
	}
}

var errProtocol = errors.New("plugin: protocol error")

// stream runs one watch stream, rebuilding the set from its events.
func (s *Source) stream(ctx context.Context, c pb.SourceClient, req *pb.WatchRequest, pub core.Publisher) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.Watch(ctx, req)
	if err != nil {
		return err
	}
	var cur core.Set
	has := false
	for {
		ev, err := st.Recv()
		if err != nil {
			return err
		}
		if ev.Kind != pb.SourceEvent_FAIL {
			next, err := apply(cur, has, ev)
			if err != nil {
				return fmt.Errorf("%w: %v", errProtocol, err)
			}
			cur, has = next, true
		}
		switch ev.Kind {
		case pb.SourceEvent_PUBLISH:
			pub.Publish(cur)
		case pb.SourceEvent_PUBLISH_STALE:
			pub.PublishStale(cur, kindError(ev.ErrorKind, ev.Error))
		case pb.SourceEvent_FAIL:
			pub.Fail(kindError(ev.ErrorKind, ev.Error))
		}
	}
}

func apply(cur core.Set, has bool, ev *pb.SourceEvent) (core.Set, error) {
	var next core.Set
	var err error
	switch {
	case ev.Full:
		next, err = core.NewSet(endpointsFromPB(ev.Upserts)...)
	case !has:
		return core.Set{}, errors.New("a delta before the first full set")
	default:
		next, err = cur.Without(ev.Removed...).With(endpointsFromPB(ev.Upserts)...)
	}
	if err != nil {
		return core.Set{}, err
	}
	if next.Len() != int(ev.Count) {
		return core.Set{}, fmt.Errorf("%d endpoints after the event, the plugin counts %d", next.Len(), ev.Count)
	}
	return next, nil
}

// Sink is a core.Sink served by a plugin binary.
type Sink struct {
	p *proc

	mu    sync.Mutex
	locks map[core.Target]*sync.Mutex
	held  map[core.Target]core.Update // the last update the plugin accepted, per target
}

var _ core.Sink = (*Sink)(nil)

// NewSink starts the plugin binary at path and checks that it serves a
// sink. After the plugin restarts, the host replays the full state of
// every target to it at once. Close it when done.
func NewSink(path string, opts ...Option) (*Sink, error) {
	s := &Sink{locks: map[core.Target]*sync.Mutex{}, held: map[core.Target]core.Update{}}
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

// Update implements core.Sink: the update crosses in the delta form; a
// plugin that does not hold its base (it restarted) asks for the full
// state, which core sends at once.
func (s *Sink) Update(ctx context.Context, u core.Update) error {
	l := s.lock(u.Target)
	l.Lock()
	defer l.Unlock()
	raw, gen, err := s.p.get(ctx)
	if err != nil {
		return err
	}
	_, err = raw.(pb.SinkClient).Update(ctx, wireToPB(u.Wire(core.DeltaForm)))
	if err == nil {
		s.mu.Lock()
		s.held[u.Target] = u
		s.mu.Unlock()
		return nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.FailedPrecondition:
		return fmt.Errorf("plugin %s: %s: %w", s.p.path, st.Message(), core.ErrResync)
	case codes.Unavailable, codes.Canceled, codes.Internal:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.p.dead(gen)
		// The restarted plugin holds nothing: send it the full state.
		return fmt.Errorf("plugin %s: %v: %w", s.p.path, err, core.ErrResync)
	}
	return fromStatus(s.p.path, err)
}

// replay sends the restarted plugin the full state of every target it
// held.
func (s *Sink) replay(ctx context.Context) {
	s.mu.Lock()
	held := make([]core.Update, 0, len(s.held))
	for _, u := range s.held {
		held = append(held, u)
	}
	s.mu.Unlock()
	for _, u := range held {
		l := s.lock(u.Target)
		l.Lock()
		s.mu.Lock()
		cur := s.held[u.Target]
		s.mu.Unlock()
		raw, _, err := s.p.get(ctx)
		if err == nil {
			full := cur
			full.BaseSeq = 0
			full.Delta = core.Delta{Added: cur.State.Endpoints.Slice()}
			_, err = raw.(pb.SinkClient).Update(ctx, wireToPB(full.Wire(core.DeltaForm)))
		}
		l.Unlock()
		if err != nil {
			s.p.log.Warn("plugin: replay after restart failed; the next update will resync", zap.Stringer("target", u.Target), zap.Error(err))
		}
	}
}
