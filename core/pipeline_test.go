package core_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
)

var svc = core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runPipeline runs p until the test ends and fails the test if Run errs.
func runPipeline(t *testing.T, p *core.Pipeline) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// gateSink blocks in Update until released, and says when a call entered.
type gateSink struct {
	entered chan core.Update
	release chan struct{}
	rec     *coretest.Recorder
}

func newGateSink() *gateSink {
	return &gateSink{entered: make(chan core.Update, 100), release: make(chan struct{}), rec: coretest.NewRecorder()}
}

func (g *gateSink) Update(ctx context.Context, u core.Update) error {
	g.entered <- u
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.rec.Update(ctx, u)
}

func TestBlockedSinkDoesNotDelayOthersAndGetsNewestState(t *testing.T) {
	ctx := testCtx(t)
	src := coretest.NewScript()
	fast := coretest.NewRecorder()
	slow := newGateSink()
	stats := &core.Stats{}
	p := core.NewPipeline(src, []core.Target{svc},
		[]core.NamedSink{core.Named("slow", slow), core.Named("fast", fast)}, core.WithMetrics(stats))
	runPipeline(t, p)
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}

	s1 := coretest.Set(t, ep("a", "10.0.0.1"), ep("b", "10.0.0.2"), ep("c", "10.0.0.3"))
	src.Publish(svc, s1)
	var first core.Update
	select {
	case first = <-slow.entered: // the slow sink is now stuck inside Update with s1
	case <-ctx.Done():
		t.Fatal("slow sink never called")
	}
	if err := fast.WaitSeq(ctx, svc, first.Seq); err != nil {
		t.Fatal(err)
	}

	// While the slow sink is blocked, four more states; the fast sink gets
	// each of them before the next is published.
	b2 := ep("b", "10.0.0.2", "fd00::2")
	var last core.Set
	cur := s1
	for i, step := range []func(core.Set) (core.Set, error){
		func(s core.Set) (core.Set, error) { return s.With(ep("d", "10.0.0.4")) },
		func(s core.Set) (core.Set, error) { return s.Without("a"), nil },
		func(s core.Set) (core.Set, error) { return s.With(b2) },
		func(s core.Set) (core.Set, error) { return s.With(ep("e", "10.0.0.5")) },
	} {
		var err error
		if cur, err = step(cur); err != nil {
			t.Fatal(err)
		}
		src.Publish(svc, cur)
		if err := fast.WaitFor(ctx, func(us []core.Update) bool {
			return len(us) == i+2 && us[i+1].State.Endpoints.Equal(cur)
		}); err != nil {
			t.Fatalf("fast sink delayed by the slow one at step %d: %v", i, err)
		}
		last = cur
	}
	if got := slow.rec.Updates(); len(got) != 0 {
		t.Fatalf("slow sink accepted %d updates while blocked", len(got))
	}

	close(slow.release)
	if err := slow.rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 2 }); err != nil {
		t.Fatal(err)
	}
	us := slow.rec.Updates()
	if !us[0].State.Endpoints.Equal(s1) {
		t.Fatalf("first slow update is not s1")
	}
	u := us[1]
	if !u.State.Endpoints.Equal(last) {
		t.Fatalf("slow sink got %v, want the newest state %v", ids(u.State.Endpoints), ids(last))
	}
	// Cumulative delta from s1 (a,b,c) to the newest (b',c,d,e).
	fastLast, _ := fast.Last(svc)
	if u.Seq != fastLast.Seq {
		t.Fatalf("slow seq %d, fast seq %d", u.Seq, fastLast.Seq)
	}
	got := fmt.Sprintf("added=%v removed=%v changed=%d", idsOf(u.Added), idsOf(u.Removed), len(u.Changed))
	if got != "added=[d e] removed=[a] changed=1" || u.Changed[0].New != b2 {
		t.Fatalf("cumulative delta: %s", got)
	}
	time.Sleep(50 * time.Millisecond) // nothing else may arrive; a late extra update would show here
	if n := len(slow.rec.Updates()); n != 2 {
		t.Fatalf("slow sink got %d updates, want 2", n)
	}
	if c := stats.Snapshot().Sinks["slow"][svc].Coalesced; c != 3 {
		t.Fatalf("coalesced = %d, want 3 (4 states behind one pending slot)", c)
	}
}

func idsOf(eps []*core.Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.ID)
	}
	return out
}

func TestRetryableSinkErrorRetriesNewestStateWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		var calls atomic.Int32
		var mu sync.Mutex
		var times []time.Time
		var got []core.Update
		sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			if calls.Add(1) <= 2 {
				return core.Retryable(errors.New("receiver busy"))
			}
			got = append(got, u)
			return nil
		})
		stats := &core.Stats{}
		p := core.NewPipeline(src, []core.Target{svc}, []core.NamedSink{core.Named("s", sink)},
			core.WithBackoff(time.Second, 8*time.Second), core.WithMetrics(stats))
		done := make(chan error, 1)
		go func() { done <- p.Run(context.Background()) }()
		synctest.Wait()

		s1 := coretest.Set(t, ep("a", "1"))
		src.Publish(svc, s1)
		synctest.Wait() // first call failed; backoff running
		s2 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
		src.Publish(svc, s2)
		synctest.Wait()
		if calls.Load() != 1 {
			t.Fatalf("calls = %d during backoff, want 1", calls.Load())
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()

		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 || !got[0].State.Endpoints.Equal(s2) {
			t.Fatalf("accepted %d updates; want one with the newest state", len(got))
		}
		if a := idsOf(got[0].Added); strings.Join(a, ",") != "a,b" {
			t.Fatalf("delta added %v, want a,b (nothing accepted before)", a)
		}
		// Equal jitter: retry n waits between half and all of min*2^n.
		for i, bounds := range [][2]time.Duration{{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}} {
			d := times[i+1].Sub(times[i])
			if d < bounds[0] || d > bounds[1] {
				t.Errorf("retry %d after %v, want within %v", i+1, d, bounds)
			}
		}
		if s := stats.Snapshot().Sinks["s"][svc]; s.Errors != 2 || s.Retryable != 2 || s.Delivered != 1 {
			t.Errorf("stats = %+v", s)
		}
		p.Close()
		<-done
	})
}

func TestRetryOfOneTargetDoesNotBlockAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
		src := coretest.NewScript()
		rec := coretest.NewRecorder()
		sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
			if u.Target == a {
				return core.Retryable(errors.New("a is down"))
			}
			return rec.Update(ctx, u)
		})
		p := core.NewPipeline(src, []core.Target{a, b}, []core.NamedSink{core.Named("s", sink)},
			core.WithBackoff(time.Minute, time.Hour))
		done := make(chan error, 1)
		go func() { done <- p.Run(context.Background()) }()
		synctest.Wait()
		src.Publish(a, coretest.Set(t, ep("x", "1")))
		synctest.Wait()
		src.Publish(b, coretest.Set(t, ep("y", "2")))
		synctest.Wait()
		if _, ok := rec.Last(b); !ok {
			t.Fatal("b waited for a's backoff")
		}
		p.Close()
		<-done
	})
}

func TestPermanentSinkErrorKeepsDeltaCumulative(t *testing.T) {
	ctx := testCtx(t)
	src := coretest.NewScript()
	rec := coretest.NewRecorder()
	stats := &core.Stats{}
	p := core.NewPipeline(src, []core.Target{svc}, []core.NamedSink{core.Named("rec", rec)}, core.WithMetrics(stats))
	runPipeline(t, p)
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}
	rec.FailWith(errors.New("bad request"))
	src.Publish(svc, coretest.Set(t, ep("a", "1")))
	for rec.Calls() < 1 {
		time.Sleep(time.Millisecond)
	}
	rec.FailWith(nil)
	s2 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
	src.Publish(svc, s2)
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 1 }); err != nil {
		t.Fatal(err)
	}
	u, _ := rec.Last(svc)
	if strings.Join(idsOf(u.Added), ",") != "a,b" {
		t.Fatalf("added %v, want a,b: the rejected update was not accepted", idsOf(u.Added))
	}
	if s := stats.Snapshot().Sinks["rec"][svc]; s.Errors != 1 || s.Retryable != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestStatesThatCancelOutAreNotDelivered(t *testing.T) {
	ctx := testCtx(t)
	src := coretest.NewScript()
	g := newGateSink()
	p := core.NewPipeline(src, []core.Target{svc}, []core.NamedSink{core.Named("g", g)})
	runPipeline(t, p)
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}
	s1 := coretest.Set(t, ep("a", "1"))
	src.Publish(svc, s1)
	<-g.entered
	s2, _ := s1.With(ep("b", "2"))
	src.Publish(svc, s2)
	src.Publish(svc, s1) // back to what the sink is taking now
	close(g.release)
	if err := g.rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 1 }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(g.rec.Updates()); n != 1 {
		t.Fatalf("got %d updates, want 1: a state equal to the accepted one is no update", n)
	}
}

func TestHubSharesWatchesAndStopsWithLastSubscriber(t *testing.T) {
	ctx := testCtx(t)
	src := coretest.NewScript()
	h := core.NewHub(src)
	defer h.Close()
	const n = 10
	subs := make([]*core.Subscription, n)
	recs := make([]*coretest.Recorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			recs[i] = coretest.NewRecorder()
			s, err := h.Subscribe(svc, fmt.Sprint("sub", i), recs[i])
			if err != nil {
				t.Error(err)
				return
			}
			subs[i] = s
		})
	}
	wg.Wait()
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}
	if got := src.Started(svc); got != 1 {
		t.Fatalf("Watch called %d times for %d concurrent subscribers, want 1", got, n)
	}
	set := coretest.Set(t, ep("a", "1"))
	src.Publish(svc, set)
	for _, r := range recs {
		if err := r.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	// A late subscriber gets the current state at once, delta from nothing.
	late := coretest.NewRecorder()
	ls, err := h.Subscribe(svc, "late", late)
	if err != nil {
		t.Fatal(err)
	}
	if err := late.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 1 && len(us[0].Added) == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := ls.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	ls.Close()
	for _, s := range subs[1:] {
		s.Close()
		s.Close() // idempotent
	}
	if got := src.Running(svc); got != 1 {
		t.Fatalf("watch stopped while a subscriber remains")
	}
	subs[0].Close()
	if got := src.Running(svc); got != 0 {
		t.Fatalf("%d watches still run after the last subscriber left", got)
	}
	if _, ok := h.State(svc); ok {
		t.Fatal("state of an unwatched target still served")
	}
	s, err := h.Subscribe(svc, "again", coretest.NewRecorder())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}
	if got := src.Started(svc); got != 2 {
		t.Fatalf("Watch started %d times, want 2 after a new demand", got)
	}
}

func TestFailKeepsLastGoodState(t *testing.T) {
	ctx := testCtx(t)
	src := coretest.NewScript()
	rec := coretest.NewRecorder()
	h := core.NewHub(src)
	defer h.Close()
	if _, err := h.Subscribe(svc, "rec", rec); err != nil {
		t.Fatal(err)
	}
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}
	s1 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
	src.Publish(svc, s1)
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 1 }); err != nil {
		t.Fatal(err)
	}
	src.Fail(svc, fmt.Errorf("watch: connection refused: %w", core.ErrUnavailable))
	src.Fail(svc, fmt.Errorf("watch: connection refused: %w", core.ErrUnavailable)) // same: no new state
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 2 }); err != nil {
		t.Fatal(err)
	}
	u, _ := rec.Last(svc)
	if !u.State.Endpoints.Equal(s1) || !u.State.Synced || !u.State.Stale.IsStale() || !u.Delta.Empty() {
		t.Fatalf("stale update = %+v", u)
	}
	if u.State.Stale.Kind != core.KindUnavailable || !strings.Contains(u.State.Stale.Reason, "connection refused") {
		t.Fatalf("staleness = %+v", u.State.Stale)
	}
	since := u.State.Stale.Since
	src.Fail(svc, errors.New("another reason"))
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 3 }); err != nil {
		t.Fatal(err)
	}
	u, _ = rec.Last(svc)
	if !u.State.Stale.Since.Equal(since) || u.State.Stale.Reason != "another reason" {
		t.Fatalf("staleness = %+v, want since kept and new reason", u.State.Stale)
	}
	src.Publish(svc, s1) // same endpoints, fresh again: an update
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 4 }); err != nil {
		t.Fatal(err)
	}
	if u, _ := rec.Last(svc); u.State.Stale.IsStale() {
		t.Fatal("still stale after a publish")
	}
	if n := len(rec.Updates()); n != 4 {
		t.Fatalf("%d updates", n)
	}
}

func TestWaitSynced(t *testing.T) {
	tests := []struct {
		name    string
		act     func(*coretest.Script)
		wantErr error  // nil: synced
		msg     string // substring of the error
	}{
		{name: "synced", act: func(s *coretest.Script) { s.Publish(svc, core.Set{}) }},
		{name: "not found fails fast", act: func(s *coretest.Script) {
			s.Fail(svc, fmt.Errorf("service demo/greeter: %w", core.ErrNotFound))
		}, wantErr: core.ErrNotFound, msg: "service demo/greeter"},
		{name: "forbidden fails fast", act: func(s *coretest.Script) {
			s.Fail(svc, fmt.Errorf("cannot list endpointslices: %w", core.ErrForbidden))
		}, wantErr: core.ErrForbidden, msg: "cannot list endpointslices"},
		{name: "unavailable waits", act: func(s *coretest.Script) { s.Fail(svc, errors.New("connection refused")) },
			wantErr: context.DeadlineExceeded, msg: "last error: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := coretest.NewScript()
			h := core.NewHub(src)
			defer h.Close()
			sub, err := h.Subscribe(svc, "x", coretest.NewRecorder())
			if err != nil {
				t.Fatal(err)
			}
			if err := src.WaitRunning(testCtx(t), svc, 1); err != nil {
				t.Fatal(err)
			}
			tt.act(src)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err = sub.WaitSynced(ctx)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("WaitSynced = %v, want %v containing %q", err, tt.wantErr, tt.msg)
			}
		})
	}
	h := core.NewHub(coretest.NewScript())
	defer h.Close()
	if err := h.WaitSynced(context.Background(), svc); !errors.Is(err, core.ErrNotWatched) {
		t.Fatalf("WaitSynced(unwatched) = %v", err)
	}
}

func TestMaxStalenessDropsLastGoodState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		h := core.NewHub(src, core.WithMaxStaleness(30*time.Second))
		rec := coretest.NewRecorder()
		if _, err := h.Subscribe(svc, "rec", rec); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		s1 := coretest.Set(t, ep("a", "1"))

		// A stale period that ends before the bound drops nothing.
		src.Publish(svc, s1)
		src.Fail(svc, errors.New("down"))
		time.Sleep(20 * time.Second)
		src.Publish(svc, s1)
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if st, _ := h.State(svc); st.Endpoints.Len() != 1 || st.Stale.IsStale() {
			t.Fatalf("state = %+v", st)
		}

		src.Fail(svc, errors.New("down again"))
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if st, _ := h.State(svc); st.Endpoints.Len() != 1 {
			t.Fatal("dropped before the bound")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		u, _ := rec.Last(svc)
		if u.State.Endpoints.Len() != 0 || !u.State.Stale.Dropped || !u.State.Stale.IsStale() || len(u.Removed) != 1 {
			t.Fatalf("after the bound: %+v", u)
		}
		src.Publish(svc, s1)
		synctest.Wait()
		if u, _ := rec.Last(svc); u.State.Endpoints.Len() != 1 || u.State.Stale.IsStale() {
			t.Fatalf("not recovered: %+v", u.State)
		}
		h.Close()
	})
}

func TestSourceRestartedAfterRetryableError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts []time.Time
		var mu sync.Mutex
		src := core.SourceFunc(func(ctx context.Context, target core.Target, pub core.Publisher) error {
			mu.Lock()
			starts = append(starts, time.Now())
			n := len(starts)
			mu.Unlock()
			if n <= 3 {
				return core.Retryable(fmt.Errorf("list failed (%d): %w", n, core.ErrUnavailable))
			}
			set, _ := core.NewSet(ep("a", "1"))
			pub.Publish(set)
			<-ctx.Done()
			return nil
		})
		h := core.NewHub(src, core.WithBackoff(time.Second, time.Minute))
		rec := coretest.NewRecorder()
		sub, err := h.Subscribe(svc, "rec", rec)
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if st, _ := sub.State(); !st.Stale.IsStale() || st.Synced || !strings.Contains(st.Stale.Reason, "list failed (1)") {
			t.Fatalf("state after a failed start = %+v", st)
		}
		if err := sub.WaitSynced(context.Background()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(starts) != 4 {
			t.Fatalf("%d starts", len(starts))
		}
		for i := 1; i < 4; i++ {
			lo := time.Second << (i - 1) / 2
			if d := starts[i].Sub(starts[i-1]); d < lo || d > 2*lo {
				t.Errorf("restart %d after %v, want within [%v, %v]", i, d, lo, 2*lo)
			}
		}
		h.Close()
	})
}

func TestSourcePermanentErrorEndsWatch(t *testing.T) {
	ctx := testCtx(t)
	src := coretest.NewScript()
	src.WatchErr(svc, fmt.Errorf("bad target: %w", core.ErrInvalid))
	h := core.NewHub(src)
	defer h.Close()
	sub, err := h.Subscribe(svc, "x", coretest.NewRecorder())
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.WaitSynced(ctx); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("WaitSynced = %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := src.Started(svc); n != 1 {
		t.Fatalf("a non-retryable watch error restarted the watch (%d starts)", n)
	}
}

func TestPipelineLifecycle(t *testing.T) {
	ctx := testCtx(t)
	src := core.NewStatic(map[core.Target]core.Set{svc: coretest.Set(t, ep("a", "1"))})
	p := core.NewPipeline(src, []core.Target{svc, svc}, nil)
	synced := make(chan error, 1)
	go func() { synced <- p.WaitSynced(ctx, svc) }() // before Run
	if err := p.WaitSynced(ctx, core.Target{Name: "other"}); !errors.Is(err, core.ErrNotWatched) {
		t.Fatalf("WaitSynced(other) = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); !errors.Is(err, core.ErrAlreadyRunning) {
		t.Fatalf("second Run = %v", err)
	}
	p.Close()
	p.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if _, err := p.Hub().Subscribe(svc, "x", coretest.NewRecorder()); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v", err)
	}

	closed := core.NewPipeline(src, []core.Target{svc}, nil)
	closed.Close()
	if err := closed.Run(ctx); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("Run after Close = %v", err)
	}
	bad := core.NewPipeline(src, []core.Target{{Namespace: "x"}}, nil)
	if err := bad.Run(ctx); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("Run with an invalid target = %v", err)
	}
}

func TestStaticSource(t *testing.T) {
	ctx := testCtx(t)
	other := core.Target{Name: "other"}
	src := core.NewStatic(map[core.Target]core.Set{svc: coretest.Set(t, ep("a", "1"))})
	rec := coretest.NewRecorder()
	p := core.NewPipeline(src, []core.Target{svc, other}, []core.NamedSink{core.Named("rec", rec)})
	runPipeline(t, p)
	if err := p.WaitSynced(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitSynced(ctx, other); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("WaitSynced(unknown) = %v", err)
	}
	src.Set(svc, coretest.Set(t, ep("a", "1"), ep("b", "2")))
	if err := rec.WaitFor(ctx, func(us []core.Update) bool {
		u, ok := last(us, svc)
		return ok && u.State.Endpoints.Len() == 2
	}); err != nil {
		t.Fatal(err)
	}
	src.Delete(svc)
	if err := rec.WaitFor(ctx, func(us []core.Update) bool {
		u, ok := last(us, svc)
		return ok && u.State.Stale.Kind == core.KindNotFound && u.State.Endpoints.Len() == 2
	}); err != nil {
		t.Fatal(err)
	}
}

func last(us []core.Update, t core.Target) (core.Update, bool) {
	for i := len(us) - 1; i >= 0; i-- {
		if us[i].Target == t {
			return us[i], true
		}
	}
	return core.Update{}, false
}

func TestStatsForgetTarget(t *testing.T) {
	ctx := testCtx(t)
	stats := &core.Stats{}
	src := coretest.NewScript()
	h := core.NewHub(src, core.WithMetrics(stats))
	defer h.Close()
	rec := coretest.NewRecorder()
	sub, err := h.Subscribe(svc, "rec", rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.WaitRunning(ctx, svc, 1); err != nil {
		t.Fatal(err)
	}
	src.Publish(svc, coretest.Set(t, ep("a", "1"), ep("b", "2")))
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 1 }); err != nil {
		t.Fatal(err)
	}
	src.Fail(svc, errors.New("down"))
	if err := rec.WaitFor(ctx, func(us []core.Update) bool { return len(us) == 2 }); err != nil {
		t.Fatal(err)
	}
	snap := stats.Snapshot()
	ts := snap.Targets[svc]
	if ts.Updates != 2 || ts.Endpoints != 2 || !ts.Synced || ts.Stale.Reason != "down" || ts.StaleFor(ts.Stale.Since.Add(time.Second)) != time.Second {
		t.Fatalf("target stats = %+v", ts)
	}
	if snap.Sinks["rec"][svc].Delivered != 2 {
		t.Fatalf("sink stats = %+v", snap.Sinks)
	}
	sub.Close()
	snap = stats.Snapshot()
	if len(snap.Targets) != 0 || len(snap.Sinks) != 0 {
		t.Fatalf("series kept after the target went: %+v", snap)
	}
}
