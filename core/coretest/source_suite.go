package coretest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
)

// Backend is one endpoint a harness writes into a source's backend: an
// address and a port, ready.
type Backend struct {
	Address string
	Port    uint16
}

// HostPort returns the backend as core.Endpoint.HostPort renders it.
func (b Backend) HostPort() string {
	return (&core.Endpoint{Addresses: []string{b.Address}, Port: b.Port}).HostPort()
}

// SourceHarness drives the backend of a source under the source conformance
// suite (TestSource): the Kubernetes source's harness writes EndpointSlices
// to a real API server, a DNS source's harness changes a DNS server's
// records, a file source's harness rewrites files.
type SourceHarness interface {
	// Source returns the source under test, the same for the whole run.
	Source() core.Source
	// NewTarget returns a target of its own for one subtest, which the
	// harness can write to; its backend starts out empty or absent.
	NewTarget(t *testing.T) core.Target
	// Write makes the backend of target hold exactly bs (and nothing else),
	// in one step as seen by the source, and returns once written.
	Write(t *testing.T, target core.Target, bs []Backend)
	// Break makes the backend unreachable for every target until Heal. It
	// returns false (and the suite skips those checks) if the harness
	// cannot.
	Break(t *testing.T) bool
	// Heal undoes Break.
	Heal(t *testing.T)
	// Missing returns a target that does not exist and the error WaitSynced
	// must wrap for it (nil: the source reports such a target as synced and
	// empty, as DNS does for NXDOMAIN). ok false skips the check.
	Missing(t *testing.T) (target core.Target, wantErr error, ok bool)
	// Timeout bounds how long the suite waits for the source to follow one
	// change of its backend.
	Timeout() time.Duration
	// IgnoreGoroutines lists substrings of goroutine stacks the leak check
	// ignores: long-lived goroutines the source's clients keep on purpose
	// (idle HTTP connections, say).
	IgnoreGoroutines() []string
}

// TestSource runs the source conformance suite against the source of h:
// what every disco source must do, whatever its backend. It covers
//
//   - the complete set after the first sync, and every published set one
//     the backend held (never a part of one);
//   - following changes, and scale to zero as a synced, fresh, empty set;
//   - a broken backend keeping the last good set, marked stale, and
//     recovering;
//   - a missing target reported as the source documents;
//   - independent targets, two hubs on one source, and a target watched
//     again after it was dropped;
//   - Watch returning promptly on cancellation with no goroutine left.
func TestSource(t *testing.T, h SourceHarness) {
	t.Run("complete set", func(t *testing.T) { sourceCompleteSet(t, h) })
	t.Run("follows changes and scale to zero", func(t *testing.T) { sourceFollows(t, h) })
	t.Run("keeps last good state", func(t *testing.T) { sourceKeepsLastGood(t, h) })
	t.Run("missing target", func(t *testing.T) { sourceMissing(t, h) })
	t.Run("independent targets", func(t *testing.T) { sourceIndependent(t, h) })
	t.Run("two hubs and a rewatch", func(t *testing.T) { sourceRewatch(t, h) })
	t.Run("cancel stops the watch", func(t *testing.T) { sourceCancel(t, h) })
}

// backends returns n backends with addresses in 10.244.base.0/24 (never
// dialled: the suite only compares them).
func backends(base, from, n int) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{Address: fmt.Sprintf("10.244.%d.%d", 200+base%50, from+i+1), Port: 8080}
	}
	return out
}

func hostPortsOf(bs []Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.HostPort()
	}
	slices.Sort(out)
	return out
}

type watched struct {
	hub *core.Hub
	rec *Recorder
	sub *core.Subscription
	spy *spy
}

// spy wraps a source to record every set it publishes, before core's
// mailboxes coalesce them.
type spy struct {
	src core.Source
	mu  sync.Mutex
	log map[core.Target][][]string
}

func (s *spy) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	return s.src.Watch(ctx, t, spyPublisher{s: s, t: t, pub: pub})
}

type spyPublisher struct {
	s   *spy
	t   core.Target
	pub core.Publisher
}

func (p spyPublisher) Publish(set core.Set) {
	p.s.mu.Lock()
	p.s.log[p.t] = append(p.s.log[p.t], HostPorts(set))
	p.s.mu.Unlock()
	p.pub.Publish(set)
}

func (p spyPublisher) PublishStale(set core.Set, err error) {
	p.s.mu.Lock()
	p.s.log[p.t] = append(p.s.log[p.t], HostPorts(set))
	p.s.mu.Unlock()
	p.pub.PublishStale(set, err)
}

func (p spyPublisher) Fail(err error) { p.pub.Fail(err) }

func watch(t *testing.T, src core.Source, targets ...core.Target) *watched {
	t.Helper()
	sp := &spy{src: src, log: map[core.Target][][]string{}}
	w := &watched{hub: Hub(t, sp), rec: NewRecorder(), spy: sp}
	sub, err := w.hub.Subscribe("conformance", w.rec, targets...)
	if err != nil {
		t.Fatalf("coretest: subscribe: %v", err)
	}
	w.sub = sub
	return w
}

// waitState waits until the target's last update satisfies ok.
func (w *watched) waitState(t *testing.T, h SourceHarness, tg core.Target, what string, ok func(core.State) bool) core.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout())
	defer cancel()
	last, err := w.rec.WaitState(ctx, tg, ok)
	if err != nil {
		t.Fatalf("coretest: %s: %s not reached within %v; last state: synced %v, stale %q, endpoints %v",
			tg, what, h.Timeout(), last.Synced, last.Stale.Reason, HostPorts(last.Endpoints))
	}
	return last
}

func (w *watched) waitEndpoints(t *testing.T, h SourceHarness, tg core.Target, want []string) core.State {
	t.Helper()
	return w.waitState(t, h, tg, fmt.Sprintf("endpoints %v", want), func(s core.State) bool {
		return s.Synced && !s.Stale.IsStale() && slices.Equal(HostPorts(s.Endpoints), want)
	})
}

// onlyWritten checks that every set the source published for tg is one of
// the sets written (never a part of one) and that all endpoints delivered
// are ready.
func (w *watched) onlyWritten(t *testing.T, tg core.Target, written [][]string) {
	t.Helper()
	w.spy.mu.Lock()
	published := slices.Clone(w.spy.log[tg])
	w.spy.mu.Unlock()
	for i, got := range published {
		if !slices.ContainsFunc(written, func(ws []string) bool { return slices.Equal(ws, got) }) {
			t.Errorf("coretest: %s: publish %d was %v, which the backend never held (written: %v)", tg, i+1, got, written)
		}
	}
	for _, u := range w.rec.For(tg) {
		if !u.State.Synced {
			continue
		}
		for e := range u.State.Endpoints.All() {
			if !e.Conditions.IsReady() || e.ID == "" {
				t.Errorf("coretest: %s seq %d: endpoint %+v should be ready and have an ID", tg, u.Seq, e)
			}
		}
	}
}

func sourceCompleteSet(t *testing.T, h SourceHarness) {
	tg := h.NewTarget(t)
	bs := backends(1, 0, 5)
	h.Write(t, tg, bs)
	w := watch(t, h.Source(), tg)
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout())
	defer cancel()
	if err := w.sub.WaitSynced(ctx); err != nil {
		t.Fatalf("coretest: WaitSynced: %v", err)
	}
	w.waitEndpoints(t, h, tg, hostPortsOf(bs))
	w.onlyWritten(t, tg, [][]string{hostPortsOf(bs)})
}

func sourceFollows(t *testing.T, h SourceHarness) {
	tg := h.NewTarget(t)
	steps := [][]Backend{
		backends(2, 0, 3),
		append(backends(2, 1, 2), backends(2, 10, 2)...), // one gone, two new
		nil, // scale to zero
		backends(2, 20, 4),
	}
	h.Write(t, tg, steps[0])
	w := watch(t, h.Source(), tg)
	var written [][]string
	for i, bs := range steps {
		if i > 0 {
			h.Write(t, tg, bs)
		}
		want := hostPortsOf(bs)
		written = append(written, want)
		st := w.waitEndpoints(t, h, tg, want)
		if len(bs) == 0 && (st.Endpoints.Len() != 0 || st.Stale.IsStale() || !st.Synced) {
			t.Fatalf("coretest: scale to zero must be synced, fresh and empty: %+v", st)
		}
	}
	w.onlyWritten(t, tg, written)
	us := w.rec.For(tg)
	for i := 1; i < len(us); i++ {
		if us[i].Seq <= us[i-1].Seq {
			t.Fatalf("coretest: seq %d after %d", us[i].Seq, us[i-1].Seq)
		}
	}
}

func sourceKeepsLastGood(t *testing.T, h SourceHarness) {
	tg := h.NewTarget(t)
	bs := backends(3, 0, 3)
	h.Write(t, tg, bs)
	w := watch(t, h.Source(), tg)
	w.waitEndpoints(t, h, tg, hostPortsOf(bs))
	if !h.Break(t) {
		t.Skip("coretest: the harness cannot break the backend")
	}
	healed := false
	defer func() {
		if !healed {
			h.Heal(t)
		}
	}()
	st := w.waitState(t, h, tg, "stale with the last good endpoints", func(s core.State) bool { return s.Stale.IsStale() })
	if got := HostPorts(st.Endpoints); !slices.Equal(got, hostPortsOf(bs)) || !st.Synced {
		t.Fatalf("coretest: stale state has %v (synced %v), want the last good %v", got, st.Synced, hostPortsOf(bs))
	}
	if st.Stale.Reason == "" || st.Stale.Kind == core.KindNone {
		t.Fatalf("coretest: staleness without reason or kind: %+v", st.Stale)
	}
	for _, u := range w.rec.For(tg) {
		if u.State.Synced && u.State.Endpoints.Len() != len(bs) {
			t.Fatalf("coretest: the broken backend made the source publish %v", HostPorts(u.State.Endpoints))
		}
	}
	h.Heal(t)
	healed = true
	w.waitEndpoints(t, h, tg, hostPortsOf(bs))
	next := backends(3, 10, 2)
	h.Write(t, tg, next)
	w.waitEndpoints(t, h, tg, hostPortsOf(next))
}

func sourceMissing(t *testing.T, h SourceHarness) {
	tg, wantErr, ok := h.Missing(t)
	if !ok {
		t.Skip("coretest: the source has no missing targets")
	}
	w := watch(t, h.Source(), tg)
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout())
	defer cancel()
	err := w.sub.WaitSynced(ctx)
	if wantErr == nil {
		if err != nil {
			t.Fatalf("coretest: WaitSynced(missing) = %v, want synced and empty", err)
		}
		if st, _ := w.sub.State(tg); st.Endpoints.Len() != 0 {
			t.Fatalf("coretest: missing target has endpoints %v", HostPorts(st.Endpoints))
		}
		return
	}
	if !errors.Is(err, wantErr) || ctx.Err() != nil {
		t.Fatalf("coretest: WaitSynced(missing) = %v, want an error wrapping %v at once", err, wantErr)
	}
}

func sourceIndependent(t *testing.T, h SourceHarness) {
	a, b := h.NewTarget(t), h.NewTarget(t)
	ba, bb := backends(4, 0, 2), backends(5, 0, 3)
	h.Write(t, a, ba)
	h.Write(t, b, bb)
	w := watch(t, h.Source(), a, b)
	w.waitEndpoints(t, h, a, hostPortsOf(ba))
	w.waitEndpoints(t, h, b, hostPortsOf(bb))
	ba2 := backends(4, 10, 1)
	h.Write(t, a, ba2)
	w.waitEndpoints(t, h, a, hostPortsOf(ba2))
	for _, u := range w.rec.For(b) {
		if u.State.Synced && (u.State.Stale.IsStale() || !slices.Equal(HostPorts(u.State.Endpoints), hostPortsOf(bb))) {
			t.Fatalf("coretest: a change of %s changed %s: %+v", a, b, u.State)
		}
	}
}

func sourceRewatch(t *testing.T, h SourceHarness) {
	tg := h.NewTarget(t)
	bs := backends(6, 0, 2)
	h.Write(t, tg, bs)
	// Two hubs on one source watch the same target at once.
	w1, w2 := watch(t, h.Source(), tg), watch(t, h.Source(), tg)
	w1.waitEndpoints(t, h, tg, hostPortsOf(bs))
	w2.waitEndpoints(t, h, tg, hostPortsOf(bs))
	w1.hub.Close()
	bs2 := backends(6, 10, 3)
	h.Write(t, tg, bs2)
	w2.waitEndpoints(t, h, tg, hostPortsOf(bs2))
	w2.hub.Close()
	// Dropped by everyone, then watched again.
	w3 := watch(t, h.Source(), tg)
	w3.waitEndpoints(t, h, tg, hostPortsOf(bs2))
}

// publisherRecorder is a core.Publisher that records, for the cancel test.
type publisherRecorder struct {
	mu    sync.Mutex
	sets  int
	fails int
}

func (p *publisherRecorder) Publish(core.Set) { p.mu.Lock(); p.sets++; p.mu.Unlock() }
func (p *publisherRecorder) Fail(error)       { p.mu.Lock(); p.fails++; p.mu.Unlock() }
func (p *publisherRecorder) PublishStale(core.Set, error) {
	p.mu.Lock()
	p.sets++
	p.mu.Unlock()
}

func sourceCancel(t *testing.T, h SourceHarness) {
	tg := h.NewTarget(t)
	h.Write(t, tg, backends(7, 0, 2))
	run := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		pub := &publisherRecorder{}
		done := make(chan error, 1)
		go func() { done <- h.Source().Watch(ctx, tg, pub) }()
		deadline := time.Now().Add(h.Timeout())
		for {
			pub.mu.Lock()
			n := pub.sets
			pub.mu.Unlock()
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("coretest: Watch published nothing within %v", h.Timeout())
			}
			time.Sleep(5 * time.Millisecond)
		}
		return func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("coretest: Watch returned %v on cancellation, want nil", err)
				}
			case <-time.After(h.Timeout()):
				t.Fatalf("coretest: Watch did not return within %v of its context ending", h.Timeout())
			}
		}
	}
	run()() // warm up: clients, connection pools
	before := goroutines()
	run()()
	ignore := append([]string{"net/http.(*persistConn)", "http2.(*ClientConn)", "http2.(*clientConnReadLoop)",
		"net/http.(*http2ClientConn)", "net/http.(*http2clientConnReadLoop)"}, h.IgnoreGoroutines()...)
	deadline := time.Now().Add(h.Timeout())
	for {
		left := leftOver(before, ignore)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("coretest: goroutines left after Watch returned:\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var goroutineID = regexp.MustCompile(`^goroutine (\d+) `)

// goroutines returns the stacks of every goroutine by ID.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if m := goroutineID.FindStringSubmatch(g); m != nil {
			out[m[1]] = g
		}
	}
	return out
}

// leftOver returns the stacks of goroutines started since before, except
// those matching ignore (and this one).
func leftOver(before map[string]string, ignore []string) []string {
	var left []string
	for id, g := range goroutines() {
		if _, ok := before[id]; ok || strings.Contains(g, "coretest.goroutines") {
			continue
		}
		if slices.ContainsFunc(ignore, func(s string) bool { return strings.Contains(g, s) }) {
			continue
		}
		left = append(left, g)
	}
	return left
}
