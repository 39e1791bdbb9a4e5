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

// subscribe subscribes sink to targets on h and fails the test on error.
func subscribe(t *testing.T, h *core.Hub, name string, sink core.Sink, targets ...core.Target) *core.Subscription {
	t.Helper()
	sub, err := h.Subscribe(name, sink, targets...)
	if err != nil {
		t.Fatal(err)
	}
	return sub
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

func (g *gateSink) Accept(ctx context.Context, u core.Update) error {
	g.entered <- u
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.rec.Accept(ctx, u)
}

func TestBlockedSinkDoesNotDelayOthersAndGetsNewestState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		fast := coretest.NewRecorder()
		slow := newGateSink()
		stats := &coretest.Stats{}
		h := coretest.Hub(t, src, core.WithMetrics(stats))
		defer h.Close()
		subscribe(t, h, "slow", slow, svc)
		subscribe(t, h, "fast", fast, svc)
		synctest.Wait()

		s1 := coretest.Set(t, ep("a", "10.0.0.1"), ep("b", "10.0.0.2"), ep("c", "10.0.0.3"))
		src.Publish(svc, s1)
		synctest.Wait()
		first := <-slow.entered // the slow sink is now stuck inside Update with s1
		if got, _ := fast.Last(svc); got.Seq != first.Seq {
			t.Fatalf("fast sink at seq %d, slow entered %d", got.Seq, first.Seq)
		}

		// While the slow sink is blocked, four more states; the fast sink gets
		// each of them before the next is published.
		b2 := ep("b", "10.0.0.2", "fd00::2")
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
			synctest.Wait()
			if us := fast.Updates(); len(us) != i+2 || !us[i+1].State.Endpoints.Equal(cur) {
				t.Fatalf("fast sink delayed by the slow one at step %d", i)
			}
		}
		if got := slow.rec.Updates(); len(got) != 0 {
			t.Fatalf("slow sink accepted %d updates while blocked", len(got))
		}

		close(slow.release)
		synctest.Wait()
		us := slow.rec.Updates()
		if len(us) != 2 {
			t.Fatalf("slow sink got %d updates, want 2 (the first and the newest)", len(us))
		}
		if !us[0].State.Endpoints.Equal(s1) {
			t.Fatalf("first slow update is not s1")
		}
		u := us[1]
		if !u.State.Endpoints.Equal(cur) {
			t.Fatalf("slow sink got %v, want the newest state %v", ids(u.State.Endpoints), ids(cur))
		}
		// Cumulative delta from s1 (a,b,c) to the newest (b',c,d,e).
		fastLast, _ := fast.Last(svc)
		if u.Seq != fastLast.Seq || u.BaseSeq != us[0].Seq {
			t.Fatalf("slow seq %d base %d, fast seq %d, first %d", u.Seq, u.BaseSeq, fastLast.Seq, us[0].Seq)
		}
		got := fmt.Sprintf("added=%v removed=%v changed=%d", idsOf(u.Added), idsOf(u.Removed), len(u.Changed))
		if got != "added=[d e] removed=[a] changed=1" || u.Changed[0].New != b2 {
			t.Fatalf("cumulative delta: %s", got)
		}
		if c := stats.Snapshot().Sinks["slow"][svc].Coalesced; c != 3 {
			t.Fatalf("coalesced = %d, want 3 (4 states behind one pending lane)", c)
		}
	})
}

func idsOf(eps []*core.Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.ID)
	}
	return out
}

func TestSeqPerTargetAndEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
		src := coretest.NewScript()
		h := coretest.Hub(t, src)
		defer h.Close()
		rec := coretest.NewRecorder()
		sub := subscribe(t, h, "rec", rec, a, b)
		synctest.Wait()
		for i := range 3 {
			src.Publish(a, coretest.Set(t, coretest.Endpoints(80, fmt.Sprintf("10.0.0.%d", i+1))...))
			src.Publish(b, coretest.Set(t, coretest.Endpoints(80, fmt.Sprintf("10.0.1.%d", i+1))...))
			synctest.Wait()
		}
		for _, tg := range []core.Target{a, b} {
			var seqs []uint64
			for _, u := range rec.For(tg) {
				seqs = append(seqs, u.Seq)
				if u.Epoch != h.Epoch() || len(u.Epoch) != 16 {
					t.Fatalf("epoch %q, hub's %q", u.Epoch, h.Epoch())
				}
			}
			if fmt.Sprint(seqs) != "[1 2 3]" {
				t.Fatalf("seqs of %s = %v, want [1 2 3]: one counter per target", tg, seqs)
			}
		}
		// A target's feed stopped and started again in the same hub numbers on
		// from above every seq used, so a receiver never sees it go back.
		sub.Close()
		rec2 := coretest.NewRecorder()
		subscribe(t, h, "again", rec2, a)
		synctest.Wait()
		src.Publish(a, coretest.Set(t, coretest.Endpoints(80, "10.0.0.9")...))
		synctest.Wait()
		if u, _ := rec2.Last(a); u.Seq <= 3 || u.BaseSeq != 0 {
			t.Fatalf("after a restart seq %d base %d, want above 3 and from nothing", u.Seq, u.BaseSeq)
		}
		if other := coretest.Hub(t, src); other.Epoch() == h.Epoch() {
			t.Fatal("two hubs share an epoch")
		}
	})
}

func TestOneSubscriptionManyTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := []core.Target{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "a"}}
		src := coretest.NewScript()
		h := coretest.Hub(t, src)
		defer h.Close()
		var inside, most atomic.Int32
		rec := coretest.NewRecorder()
		sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
			n := inside.Add(1)
			defer inside.Add(-1)
			if n > most.Load() {
				most.Store(n)
			}
			time.Sleep(time.Millisecond)
			return rec.Accept(ctx, u)
		})
		sub := subscribe(t, h, "many", sink, ts...)
		if got := sub.Targets(); len(got) != 3 {
			t.Fatalf("targets %v, want 3 (duplicates count once)", got)
		}
		synctest.Wait()
		for _, tg := range ts[:3] {
			if src.Started(tg) != 1 {
				t.Fatalf("Watch of %s started %d times", tg, src.Started(tg))
			}
			src.Publish(tg, coretest.Set(t, ep(tg.Name, "10.0.0.1")))
		}
		if err := sub.WaitSynced(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if len(rec.Updates()) != 3 || most.Load() != 1 {
			t.Fatalf("%d updates, %d concurrent calls: want 3, one at a time", len(rec.Updates()), most.Load())
		}
		if st, ok := sub.State(ts[1]); !ok || st.Endpoints.Len() != 1 {
			t.Fatalf("State(b) = %+v, %v", st, ok)
		}
		if _, err := h.Subscribe("none", rec); !errors.Is(err, core.ErrInvalid) {
			t.Fatalf("Subscribe without targets = %v", err)
		}
	})
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
				return errors.New("receiver busy") // unclassified: transient
			}
			got = append(got, u)
			return nil
		})
		stats := &coretest.Stats{}
		h := coretest.Hub(t, src, core.WithBackoff(time.Second, 8*time.Second), core.WithMetrics(stats))
		defer h.Close()
		subscribe(t, h, "s", sink, svc)
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
		if a := idsOf(got[0].Added); strings.Join(a, ",") != "a,b" || got[0].BaseSeq != 0 {
			t.Fatalf("delta added %v base %d, want a,b from nothing (nothing accepted before)", a, got[0].BaseSeq)
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
	})
}

func TestRetryOfOneTargetDoesNotBlockAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
		src := coretest.NewScript()
		rec := coretest.NewRecorder()
		sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
			if u.Target == a {
				return core.Retry(errors.New("a is down"), 0)
			}
			return rec.Accept(ctx, u)
		})
		h := coretest.Hub(t, src, core.WithBackoff(time.Minute, time.Hour))
		subscribe(t, h, "s", sink, a, b)
		synctest.Wait()
		src.Publish(a, coretest.Set(t, ep("x", "1")))
		synctest.Wait()
		src.Publish(b, coretest.Set(t, ep("y", "2")))
		synctest.Wait()
		if _, ok := rec.Last(b); !ok {
			t.Fatal("b waited for a's backoff")
		}
		h.Close()
	})
}

func TestPermanentSinkErrorKeepsDeltaCumulative(t *testing.T) {
	for _, perm := range []error{core.Permanent(errors.New("bad request")), fmt.Errorf("bad endpoint: %w", core.ErrInvalid)} {
		t.Run(perm.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := coretest.NewScript()
				rec := coretest.NewRecorder()
				stats := &coretest.Stats{}
				h := coretest.Hub(t, src, core.WithMetrics(stats))
				defer h.Close()
				subscribe(t, h, "rec", rec, svc)
				synctest.Wait()
				rec.FailWith(perm)
				src.Publish(svc, coretest.Set(t, ep("a", "1")))
				time.Sleep(time.Hour) // a retry would come long before
				synctest.Wait()
				if rec.Calls() != 1 {
					t.Fatalf("a permanent error was retried: %d calls", rec.Calls())
				}
				rec.FailWith(nil)
				s2 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
				src.Publish(svc, s2)
				synctest.Wait()
				u, _ := rec.Last(svc)
				if strings.Join(idsOf(u.Added), ",") != "a,b" || u.BaseSeq != 0 {
					t.Fatalf("added %v base %d, want a,b from nothing: the rejected update was not accepted", idsOf(u.Added), u.BaseSeq)
				}
				if s := stats.Snapshot().Sinks["rec"][svc]; s.Errors != 1 || s.Retryable != 0 {
					t.Fatalf("stats = %+v", s)
				}
			})
		})
	}
}

// A sink's RetryAfter replaces the hub's backoff: the newest state comes
// again after exactly the delay the sink asked for, however short or long.
func TestSinkRetryAfterSetsTheDelay(t *testing.T) {
	for _, d := range []time.Duration{50 * time.Millisecond, 30 * time.Second} {
		t.Run(d.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := coretest.NewScript()
				rec := coretest.NewRecorder()
				h := coretest.Hub(t, src, core.WithBackoff(time.Second, time.Second))
				defer h.Close()
				subscribe(t, h, "rec", rec, svc)
				synctest.Wait()
				rec.FailWith(core.Retry(errors.New("503"), d))
				src.Publish(svc, coretest.Set(t, ep("a", "1")))
				synctest.Wait()
				rec.FailWith(nil)
				time.Sleep(d - time.Millisecond)
				synctest.Wait()
				if rec.Calls() != 1 {
					t.Fatalf("%d calls before the delay ended, want 1", rec.Calls())
				}
				time.Sleep(time.Millisecond)
				synctest.Wait()
				if rec.Calls() != 2 || len(rec.Updates()) != 1 {
					t.Fatalf("%d calls, %d accepted at the delay, want 2 and 1", rec.Calls(), len(rec.Updates()))
				}
			})
		})
	}
	if d, ok := core.RetryDelay(fmt.Errorf("wrapped: %w", core.Retry(errors.New("x"), time.Minute))); !ok || d != time.Minute {
		t.Fatalf("RetryDelay = %v %v", d, ok)
	}
	if core.IsPermanent(core.Retry(core.ErrInvalid, time.Second)) || core.Retry(nil, time.Second) != nil {
		t.Fatal("RetryAfter must be retryable, and nil for nil")
	}
}

func TestResyncSendsTheFullStateFromNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		rec := coretest.NewRecorder()
		stats := &coretest.Stats{}
		h := coretest.Hub(t, src, core.WithMetrics(stats), core.WithBackoff(time.Second, time.Minute))
		defer h.Close()
		subscribe(t, h, "rec", rec, svc)
		synctest.Wait()
		s1 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
		src.Publish(svc, s1)
		synctest.Wait()
		first, _ := rec.Last(svc)

		// The sink lost its state: the next update comes at once, full.
		rec.FailWith(fmt.Errorf("receiver restarted: %w", core.ErrResync))
		s2, _ := s1.With(ep("c", "3"))
		src.Publish(svc, s2)
		synctest.Wait()
		if rec.Calls() != 3 {
			t.Fatalf("%d calls, want 3: the delta, its rejection, and at once the full state", rec.Calls())
		}
		// Asked again for a full state: a backoff, as for any transient error.
		time.Sleep(400 * time.Millisecond)
		synctest.Wait()
		if rec.Calls() != 3 {
			t.Fatalf("a repeated resync was not backed off: %d calls", rec.Calls())
		}
		rec.FailWith(nil)
		time.Sleep(time.Second)
		synctest.Wait()
		u, _ := rec.Last(svc)
		if u.BaseSeq != 0 || strings.Join(idsOf(u.Added), ",") != "a,b,c" || len(u.Removed)+len(u.Changed) != 0 || u.Seq <= first.Seq {
			t.Fatalf("after resync: seq %d base %d added %v", u.Seq, u.BaseSeq, idsOf(u.Added))
		}
		if s := stats.Snapshot().Sinks["rec"][svc]; s.Resyncs != 2 {
			t.Fatalf("resyncs = %d, want 2", s.Resyncs)
		}
		// And deltas again from there.
		s3 := s2.Without("a")
		src.Publish(svc, s3)
		synctest.Wait()
		if v, _ := rec.Last(svc); v.BaseSeq != u.Seq || strings.Join(idsOf(v.Removed), ",") != "a" {
			t.Fatalf("after resync: base %d removed %v", v.BaseSeq, idsOf(v.Removed))
		}
	})
}

func TestStatesThatCancelOutAreNotDelivered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		g := newGateSink()
		h := coretest.Hub(t, src)
		defer h.Close()
		subscribe(t, h, "g", g, svc)
		synctest.Wait()
		s1 := coretest.Set(t, ep("a", "1"))
		src.Publish(svc, s1)
		<-g.entered
		s2, _ := s1.With(ep("b", "2"))
		src.Publish(svc, s2)
		src.Publish(svc, s1) // back to what the sink is taking now
		close(g.release)
		synctest.Wait()
		if n := len(g.rec.Updates()); n != 1 {
			t.Fatalf("got %d updates, want 1: a state equal to the accepted one is no update", n)
		}
	})
}

func TestHubSharesFeedsAndStopsWithLastSubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		h := coretest.Hub(t, src)
		defer h.Close()
		const n = 10
		subs := make([]*core.Subscription, n)
		recs := make([]*coretest.Recorder, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				recs[i] = coretest.NewRecorder()
				s, err := h.Subscribe(fmt.Sprint("sub", i), recs[i], svc)
				if err != nil {
					t.Error(err)
					return
				}
				subs[i] = s
			})
		}
		wg.Wait()
		synctest.Wait()
		if got := src.Started(svc); got != 1 || src.Running(svc) != 1 {
			t.Fatalf("Watch called %d times for %d concurrent subscribers, want 1", got, n)
		}
		set := coretest.Set(t, ep("a", "1"))
		src.Publish(svc, set)
		synctest.Wait()
		for _, r := range recs {
			if len(r.Updates()) != 1 {
				t.Fatal("a subscriber missed the state")
			}
		}
		// A late subscriber gets the current state at once, delta from nothing.
		late := coretest.NewRecorder()
		ls := subscribe(t, h, "late", late, svc)
		synctest.Wait()
		if us := late.Updates(); len(us) != 1 || len(us[0].Added) != 1 || us[0].BaseSeq != 0 {
			t.Fatalf("late subscriber got %+v", us)
		}
		if err := ls.WaitSynced(context.Background()); err != nil {
			t.Fatal(err)
		}
		ls.Close()
		for _, s := range subs[1:] {
			s.Close()
			s.Close() // idempotent
		}
		synctest.Wait()
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
		s := subscribe(t, h, "again", coretest.NewRecorder(), svc)
		defer s.Close()
		synctest.Wait()
		if got := src.Started(svc); got != 2 {
			t.Fatalf("Watch started %d times, want 2 after a new demand", got)
		}
	})
}

func TestLingerKeepsTheFeedForAReturningSubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		h := coretest.Hub(t, src, core.WithLinger(10*time.Second))
		defer h.Close()
		for range 5 { // a client that opens and closes connections
			sub := subscribe(t, h, "conn", coretest.NewRecorder(), svc)
			synctest.Wait()
			sub.Close()
			time.Sleep(5 * time.Second)
		}
		if src.Started(svc) != 1 || src.Running(svc) != 1 {
			t.Fatalf("%d starts, %d running: want one watch kept through the grace periods", src.Started(svc), src.Running(svc))
		}
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if src.Running(svc) != 0 {
			t.Fatal("watch kept after the grace period")
		}
	})
}

func TestFailKeepsLastGoodState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		rec := coretest.NewRecorder()
		h := coretest.Hub(t, src)
		defer h.Close()
		subscribe(t, h, "rec", rec, svc)
		synctest.Wait()
		s1 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
		src.Publish(svc, s1)
		synctest.Wait()
		src.Fail(svc, fmt.Errorf("watch: connection refused: %w", core.ErrUnavailable))
		synctest.Wait()
		src.Fail(svc, fmt.Errorf("watch: connection refused: %w", core.ErrUnavailable)) // same: no new state
		synctest.Wait()
		if n := len(rec.Updates()); n != 2 {
			t.Fatalf("%d updates, want 2", n)
		}
		u, _ := rec.Last(svc)
		if !u.State.Endpoints.Equal(s1) || !u.State.Synced || !u.State.Stale.IsStale() || !u.Delta.Empty() {
			t.Fatalf("stale update = %+v", u)
		}
		if u.State.Stale.Kind != core.KindUnavailable || !strings.Contains(u.State.Stale.Reason, "connection refused") {
			t.Fatalf("staleness = %+v", u.State.Stale)
		}
		since := u.State.Stale.Since
		time.Sleep(time.Second)
		src.Fail(svc, errors.New("another reason"))
		synctest.Wait()
		u, _ = rec.Last(svc)
		if !u.State.Stale.Since.Equal(since) || u.State.Stale.Reason != "another reason" {
			t.Fatalf("staleness = %+v, want since kept and new reason", u.State.Stale)
		}
		src.Publish(svc, s1) // same endpoints, fresh again: an update
		synctest.Wait()
		if u, _ := rec.Last(svc); u.State.Stale.IsStale() {
			t.Fatal("still stale after a publish")
		}
		if n := len(rec.Updates()); n != 4 {
			t.Fatalf("%d updates", n)
		}
	})
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
			synctest.Test(t, func(t *testing.T) {
				src := coretest.NewScript()
				h := coretest.Hub(t, src)
				defer h.Close()
				sub := subscribe(t, h, "x", coretest.NewRecorder(), svc)
				synctest.Wait()
				tt.act(src)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				err := sub.WaitSynced(ctx)
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
		})
	}
	h := coretest.Hub(t, coretest.NewScript())
	defer h.Close()
	if err := h.WaitSynced(context.Background(), svc); !errors.Is(err, core.ErrNotWatched) {
		t.Fatalf("WaitSynced(unwatched) = %v", err)
	}
}

func TestMaxStalenessDropsLastGoodState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		h := coretest.Hub(t, src, core.WithMaxStaleness(30*time.Second))
		defer h.Close()
		rec := coretest.NewRecorder()
		subscribe(t, h, "rec", rec, svc)
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
	})
}

// TestWatchErrorRule: one rule for what a Watch's return means. Transient
// errors restart it with backoff; permanent ones (classified, or marked) end
// it, visibly, and WaitSynced returns at once; nil ends it keeping the state.
func TestWatchErrorRule(t *testing.T) {
	plain := errors.New("connection reset")
	tests := []struct {
		name     string
		err      error
		restarts bool
		waitErr  error // what WaitSynced wraps; nil: synced
	}{
		{name: "unclassified is retried", err: plain, restarts: true},
		{name: "unavailable is retried", err: fmt.Errorf("list: %w", core.ErrUnavailable), restarts: true},
		{name: "marked retryable not found is retried", err: core.Retry(fmt.Errorf("no zone yet: %w", core.ErrNotFound), 0), restarts: true},
		{name: "invalid ends", err: fmt.Errorf("bad target: %w", core.ErrInvalid), waitErr: core.ErrInvalid},
		{name: "not found ends", err: fmt.Errorf("no such service: %w", core.ErrNotFound), waitErr: core.ErrNotFound},
		{name: "forbidden ends", err: fmt.Errorf("rbac: %w", core.ErrForbidden), waitErr: core.ErrForbidden},
		{name: "marked permanent ends", err: core.Permanent(plain), waitErr: plain},
		{name: "nil ends", err: nil, waitErr: core.ErrEnded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var starts atomic.Int32
				src := core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
					if starts.Add(1) > 1 {
						pub.Publish(coretest.Set(t, ep("a", "1")))
						<-ctx.Done()
						return nil
					}
					return tt.err
				})
				h := coretest.Hub(t, src, core.WithBackoff(time.Second, time.Minute))
				defer h.Close()
				sub := subscribe(t, h, "x", coretest.NewRecorder(), svc)
				if tt.restarts {
					time.Sleep(time.Second)
					synctest.Wait()
					if st, _ := sub.State(svc); starts.Load() != 2 || !st.Synced || st.Ended || st.Stale.IsStale() {
						t.Fatalf("%d starts, state %+v; want synced after one restart", starts.Load(), st)
					}
					return
				}
				err := sub.WaitSynced(context.Background())
				if !errors.Is(err, tt.waitErr) || !errors.Is(err, core.ErrEnded) {
					t.Fatalf("WaitSynced = %v, want an ErrEnded wrapping %v", err, tt.waitErr)
				}
				time.Sleep(time.Hour)
				synctest.Wait()
				st, _ := sub.State(svc)
				if starts.Load() != 1 || !st.Ended || (tt.err != nil) != st.Stale.IsStale() {
					t.Fatalf("%d starts, state %+v: want one start, ended, stale with a permanent error", starts.Load(), st)
				}
				// A new subscriber restarts the ended watch; the first one is
				// still subscribed and gets the states too.
				sub2 := subscribe(t, h, "y", coretest.NewRecorder(), svc)
				if err := sub2.WaitSynced(context.Background()); err != nil {
					t.Fatalf("after restart: %v", err)
				}
				if st, _ := sub.State(svc); starts.Load() != 2 || st.Ended || st.Stale.IsStale() {
					t.Fatalf("after restart: %d starts, state %+v", starts.Load(), st)
				}
			})
		})
	}
}

func TestSourceRestartedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts []time.Time
		var mu sync.Mutex
		src := core.SourceFunc(func(ctx context.Context, target core.Target, pub core.Publisher) error {
			mu.Lock()
			starts = append(starts, time.Now())
			n := len(starts)
			mu.Unlock()
			if n <= 3 {
				return fmt.Errorf("list failed (%d): %w", n, core.ErrUnavailable)
			}
			pub.Publish(coretest.Set(t, ep("a", "1")))
			<-ctx.Done()
			return nil
		})
		h := coretest.Hub(t, src, core.WithBackoff(time.Second, time.Minute))
		defer h.Close()
		sub := subscribe(t, h, "rec", coretest.NewRecorder(), svc)
		synctest.Wait()
		if st, _ := sub.State(svc); !st.Stale.IsStale() || st.Synced || !strings.Contains(st.Stale.Reason, "list failed (1)") {
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
	})
}

// TestLatePublishOfAnEndedAttemptIsIgnored: each Watch attempt has its own
// Publisher; one kept by a goroutine the source leaked counts no more.
func TestLatePublishOfAnEndedAttemptIsIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pubs := make(chan core.Publisher, 2)
		var starts atomic.Int32
		src := core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
			pubs <- pub
			if starts.Add(1) == 1 {
				return errors.New("stream broke") // transient: a second attempt follows
			}
			<-ctx.Done()
			return nil
		})
		h := coretest.Hub(t, src, core.WithBackoff(time.Second, time.Second))
		defer h.Close()
		rec := coretest.NewRecorder()
		sub := subscribe(t, h, "rec", rec, svc)
		old := <-pubs
		cur := <-pubs
		cur.Publish(coretest.Set(t, ep("new", "2")))
		old.Publish(coretest.Set(t, ep("ghost", "1")))
		old.Fail(errors.New("ghost failure"))
		synctest.Wait()
		st, _ := sub.State(svc)
		if ids := ids(st.Endpoints); len(ids) != 1 || ids[0] != "new" || st.Stale.IsStale() {
			t.Fatalf("state %+v: the ended attempt's publisher still counts", st)
		}
	})
}

func TestHubLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		src := coretest.NewStatic(map[core.Target]core.Set{svc: coretest.Set(t, ep("a", "1"))})
		h := coretest.Hub(t, src)
		if err := h.WaitSynced(ctx, svc); !errors.Is(err, core.ErrNotWatched) {
			t.Fatalf("WaitSynced before any subscription = %v", err)
		}
		rec := coretest.NewRecorder()
		sub := subscribe(t, h, "rec", rec, svc, svc) // a duplicate target counts once
		if got := sub.Targets(); len(got) != 1 {
			t.Fatalf("Targets = %v", got)
		}
		if err := sub.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
		if st, ok := h.State(svc); !ok || st.Endpoints.Len() != 1 {
			t.Fatalf("State = %+v, %v", st, ok)
		}
		if st, ok := sub.State(svc); !ok || st.Endpoints.Len() != 1 {
			t.Fatalf("Subscription.State = %+v, %v", st, ok)
		}
		if _, err := h.Subscribe("bad", rec, core.Target{Namespace: "x"}); !errors.Is(err, core.ErrInvalid) {
			t.Fatalf("Subscribe to an invalid target = %v", err)
		}
		if _, err := h.Subscribe("none", rec); !errors.Is(err, core.ErrInvalid) {
			t.Fatalf("Subscribe to no target = %v", err)
		}
		sub.Close()
		sub.Close()
		h.Close()
		h.Close()
		if _, err := h.Subscribe("late", rec, svc); !errors.Is(err, core.ErrClosed) {
			t.Fatalf("Subscribe after Close = %v", err)
		}
	})
}

// A bad option value is an error at construction naming the option and
// what it allows.
func TestNewHubRefusesBadOptions(t *testing.T) {
	src := coretest.NewScript()
	for _, tc := range []struct {
		opt  core.Option
		want string
	}{
		{core.WithBackoff(0, time.Second), "WithBackoff(0s, 1s): want 0 < min <= max <= 24h"},
		{core.WithBackoff(time.Second, time.Millisecond), "WithBackoff(1s, 1ms)"},
		{core.WithLinger(-time.Second), "WithLinger(-1s): want 0 (off) to 1h0m0s"},
		{core.WithMaxStaleness(-1), "WithMaxStaleness(-1ns)"},
	} {
		if _, err := core.NewHub(src, tc.opt); !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewHub = %v, want an invalid error saying %q", err, tc.want)
		}
	}
	if _, err := core.NewHub(nil); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("NewHub(nil) = %v", err)
	}
	if _, err := core.NewHub(src, core.WithLogger(nil), core.WithMetrics(nil)); err != nil {
		t.Errorf("nil logger and metrics mean none: %v", err)
	}
}

func TestSubscribeAfterClose(t *testing.T) {
	h := coretest.Hub(t, coretest.NewScript())
	h.Close()
	if _, err := h.Subscribe("x", coretest.NewRecorder(), svc); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v", err)
	}
	if _, err := coretest.Hub(t, coretest.NewScript()).Subscribe("x", coretest.NewRecorder(), core.Target{}); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("Subscribe to an invalid target = %v", err)
	}
}

func TestStaticSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		other := core.Target{Name: "other"}
		src := coretest.NewStatic(map[core.Target]core.Set{svc: coretest.Set(t, ep("a", "1"))})
		rec := coretest.NewRecorder()
		h := coretest.Hub(t, src)
		defer h.Close()
		subscribe(t, h, "rec", rec, svc, other)
		if err := h.WaitSynced(ctx, svc); err != nil {
			t.Fatal(err)
		}
		if err := h.WaitSynced(ctx, other); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("WaitSynced(unknown) = %v", err)
		}
		src.Set(svc, coretest.Set(t, ep("a", "1"), ep("b", "2")))
		synctest.Wait()
		if u, ok := rec.Last(svc); !ok || u.State.Endpoints.Len() != 2 {
			t.Fatalf("after Set: %+v", u)
		}
		src.Delete(svc)
		synctest.Wait()
		if u, _ := rec.Last(svc); u.State.Stale.Kind != core.KindNotFound || u.State.Endpoints.Len() != 2 {
			t.Fatalf("after Delete: %+v", u.State)
		}
	})
}

func TestStatsForgetTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stats := &coretest.Stats{}
		src := coretest.NewScript()
		h := coretest.Hub(t, src, core.WithMetrics(stats))
		defer h.Close()
		rec := coretest.NewRecorder()
		sub := subscribe(t, h, "rec", rec, svc)
		synctest.Wait()
		src.Publish(svc, coretest.Set(t, ep("a", "1"), ep("b", "2")))
		synctest.Wait()
		src.Fail(svc, errors.New("down"))
		synctest.Wait()
		snap := stats.Snapshot()
		ts := snap.Targets[svc]
		if ts.Updates != 2 || ts.Seq != 2 || ts.Endpoints != 2 || !ts.Synced || ts.Stale.Reason != "down" || ts.StaleFor(ts.Stale.Since.Add(time.Second)) != time.Second {
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
	})
}

// PublishStale: a set the source cannot fully vouch for is never seen fresh.
func TestPublishStaleIsNeverFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		h := coretest.Hub(t, src)
		defer h.Close()
		rec := coretest.NewRecorder()
		subscribe(t, h, "rec", rec, svc)
		synctest.Wait()
		part := coretest.Set(t, ep("a", "1"))
		src.PublishStale(svc, part, fmt.Errorf("slice x: endpoint y unusable: %w", core.ErrInvalid))
		synctest.Wait()
		src.Publish(svc, coretest.Set(t, ep("a", "1"), ep("b", "2")))
		synctest.Wait()
		src.PublishStale(svc, core.Set{}, fmt.Errorf("service gone: %w", core.ErrNotFound))
		synctest.Wait()
		us := rec.Updates()
		if len(us) != 3 {
			t.Fatalf("%d updates, want 3", len(us))
		}
		if st := us[0].State; !st.Synced || st.Stale.Kind != core.KindInvalid || st.Endpoints.Len() != 1 {
			t.Fatalf("first: %+v", st)
		}
		if st := us[1].State; st.Stale.IsStale() || st.Endpoints.Len() != 2 {
			t.Fatalf("second: %+v", st)
		}
		if st := us[2].State; !st.Synced || st.Stale.Kind != core.KindNotFound || st.Endpoints.Len() != 0 || len(us[2].Removed) != 2 {
			t.Fatalf("third: %+v", us[2])
		}
	})
}

// Targets lists what the hub watches: a subscription's targets while it
// lasts, none after (no linger).
func TestHubTargetsListsWhatIsWatched(t *testing.T) {
	a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
	src := coretest.NewStatic(map[core.Target]core.Set{a: {}, b: {}})
	hub := coretest.Hub(t, src)
	if got := hub.Targets(); len(got) != 0 {
		t.Fatalf("before any subscription: %v", got)
	}
	sub, err := hub.Subscribe("s", coretest.NewRecorder(), b, a)
	if err != nil {
		t.Fatal(err)
	}
	if got := hub.Targets(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("Targets = %v, want [a b]", got)
	}
	sub.Close()
	if got := hub.Targets(); len(got) != 0 {
		t.Fatalf("after the last subscription closed: %v", got)
	}
}
