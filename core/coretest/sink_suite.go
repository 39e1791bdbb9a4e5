package coretest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// SinkHarness builds and observes sinks under the sink conformance suite
// (TestSink).
type SinkHarness interface {
	// NewSink returns a new sink for one subtest (cleaned up with
	// t.Cleanup).
	NewSink(t *testing.T) core.Sink
	// Observe returns the address:port of every endpoint the sink acts on
	// now for target (in any order): where it would send calls, what it
	// holds. The suite polls it until it matches, so a sink may act
	// asynchronously.
	Observe(t *testing.T, sink core.Sink, target core.Target) []string
	// Routes is true for a sink that routes calls: it acts only on
	// core.Routable endpoints (ready ones; serving-and-terminating ones only
	// while none is ready). False: it holds every endpoint.
	Routes() bool
	// MultiTarget is true for a sink that serves several targets at once
	// (a pool, a webhook); false for one per target (a gRPC resolver).
	MultiTarget() bool
	// Timeout bounds how long the suite waits for the sink to act on one
	// update.
	Timeout() time.Duration
}

// TestSink runs the sink conformance suite against the sinks h builds: what
// every disco sink must do with the updates core delivers. It covers
//
//   - applying each update's delta, so the sink ends with the state;
//   - a redelivered update (a retry after a lost acknowledgement) changing
//     nothing;
//   - an update from nothing (BaseSeq 0, after ErrResync or on a new
//     subscription) replacing whatever the sink held, with no ghost;
//   - scale to zero and back; a stale state keeping its endpoints; an
//     unsynced state changing nothing;
//   - conditions (for a routing sink: kube-proxy's terminating fallback);
//   - several targets at once (if the sink serves several);
//   - returning promptly when its context is cancelled (blocking in Accept
//     is allowed, ignoring cancellation is not);
//   - a burst of states through a real Hub ending in the last one.
func TestSink(t *testing.T, h SinkHarness) {
	t.Run("applies deltas", func(t *testing.T) { sinkApplies(t, h) })
	t.Run("redelivery is idempotent", func(t *testing.T) { sinkIdempotent(t, h) })
	t.Run("update from nothing replaces", func(t *testing.T) { sinkResync(t, h) })
	t.Run("scale to zero, stale, unsynced", func(t *testing.T) { sinkEdgeStates(t, h) })
	t.Run("conditions", func(t *testing.T) { sinkConditions(t, h) })
	t.Run("several targets", func(t *testing.T) { sinkSeveralTargets(t, h) })
	t.Run("cancelled context", func(t *testing.T) { sinkCancelled(t, h) })
	t.Run("through a hub", func(t *testing.T) { sinkThroughHub(t, h) })
}

// feeder builds the updates core would deliver to one sink.
type feeder struct {
	epoch string
	seq   uint64
	acc   map[core.Target]core.Update
}

func newFeeder() *feeder {
	return &feeder{epoch: "c0ffee0c0ffee000", acc: map[core.Target]core.Update{}}
}

// next returns the update to st from what the sink last accepted (from
// nothing if fromNothing).
func (f *feeder) next(tg core.Target, st core.State, fromNothing bool) core.Update {
	f.seq++
	prev, ok := f.acc[tg]
	u := core.Update{Target: tg, Epoch: f.epoch, Seq: f.seq, State: st}
	base := core.Set{}
	if ok && !fromNothing {
		u.BaseSeq, base = prev.Seq, prev.State.Endpoints
	}
	u.Delta = core.Diff(base, st.Endpoints)
	return u
}

// deliver hands u to sink and records it as accepted.
func (f *feeder) deliver(t *testing.T, sink core.Sink, u core.Update) {
	t.Helper()
	if err := sink.Accept(context.Background(), u); err != nil {
		t.Fatalf("coretest: Update(%s seq %d) = %v", u.Target, u.Seq, err)
	}
	f.acc[u.Target] = u
}

func (f *feeder) send(t *testing.T, sink core.Sink, tg core.Target, st core.State) core.Update {
	t.Helper()
	u := f.next(tg, st, false)
	f.deliver(t, sink, u)
	return u
}

func synced(t *testing.T, eps ...*core.Endpoint) core.State {
	return core.State{Endpoints: Set(t, eps...), Synced: true}
}

// endpoint builds a ready endpoint with address 10.244.250.n.
func endpoint(id string, n int) *core.Endpoint {
	return &core.Endpoint{ID: id, Name: id, Addresses: []string{fmt.Sprintf("10.244.250.%d", n)}, Port: 8080}
}

func withConditions(e *core.Endpoint, ready, serving, terminating bool) *core.Endpoint {
	c := *e
	c.Conditions = core.Conditions{Ready: new(ready), Serving: new(serving), Terminating: new(terminating)}
	return &c
}

// expect returns what h's sinks should act on for st.
func expect(h SinkHarness, st core.State) []string {
	if h.Routes() {
		s, _ := core.NewSet(route.Routable(st.Endpoints)...)
		return HostPorts(s)
	}
	return HostPorts(st.Endpoints)
}

func waitObserve(t *testing.T, h SinkHarness, sink core.Sink, tg core.Target, want []string, what string) {
	t.Helper()
	want = slices.Clone(want)
	slices.Sort(want)
	deadline := time.Now().Add(h.Timeout())
	for {
		got := slices.Clone(h.Observe(t, sink, tg))
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("coretest: %s: %s: the sink acts on %v, want %v (after %v)", tg, what, got, want, h.Timeout())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	sinkTarget  = core.Target{Namespace: "conformance", Name: "sink", Port: "grpc"}
	sinkTarget2 = core.Target{Namespace: "conformance", Name: "other", Port: "grpc"}
)

func sinkApplies(t *testing.T, h SinkHarness) {
	sink, f := h.NewSink(t), newFeeder()
	a, b, c, d := endpoint("a", 1), endpoint("b", 2), endpoint("c", 3), endpoint("d", 4)
	b2 := endpoint("b", 12) // new address, same identity
	b3 := *b2
	b3.Addresses = []string{"10.244.250.12", "fd00::c"} // dual stack joined
	for i, st := range []core.State{
		synced(t, a, b, c),
		synced(t, a, b2, c),
		synced(t, a, &b3, c),
		synced(t, a, &b3),
		synced(t, &b3, d),
		synced(t, a, &b3, c, d),
	} {
		f.send(t, sink, sinkTarget, st)
		waitObserve(t, h, sink, sinkTarget, expect(h, st), fmt.Sprintf("step %d", i))
	}
}

func sinkIdempotent(t *testing.T, h SinkHarness) {
	sink, f := h.NewSink(t), newFeeder()
	a, b, c := endpoint("a", 1), endpoint("b", 2), endpoint("c", 3)
	f.send(t, sink, sinkTarget, synced(t, a, b))
	st := synced(t, b, c)
	u := f.next(sinkTarget, st, false)
	f.deliver(t, sink, u)
	f.deliver(t, sink, u) // the acknowledgement was lost; core retries
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "after a redelivered update")
	f.send(t, sink, sinkTarget, st) // equal state, empty delta
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "after an empty delta")
	st2 := synced(t, a, c)
	f.send(t, sink, sinkTarget, st2)
	waitObserve(t, h, sink, sinkTarget, expect(h, st2), "after the next delta")
}

func sinkResync(t *testing.T, h SinkHarness) {
	sink, f := h.NewSink(t), newFeeder()
	a, b, c, d := endpoint("a", 1), endpoint("b", 2), endpoint("c", 3), endpoint("d", 4)
	f.send(t, sink, sinkTarget, synced(t, a, b, c))
	c2 := endpoint("c", 13)
	st := synced(t, c2, d)
	u := f.next(sinkTarget, st, true) // from nothing: a, b must go, c changes
	if u.BaseSeq != 0 || len(u.Added) != 2 || len(u.Removed)+len(u.Changed) != 0 {
		t.Fatalf("coretest: bad resync update %+v", u)
	}
	f.deliver(t, sink, u)
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "after an update from nothing")
	st2 := synced(t, d)
	f.send(t, sink, sinkTarget, st2)
	waitObserve(t, h, sink, sinkTarget, expect(h, st2), "after a delta following the resync")
}

func sinkEdgeStates(t *testing.T, h SinkHarness) {
	sink, f := h.NewSink(t), newFeeder()
	a, b := endpoint("a", 1), endpoint("b", 2)
	// Not synced yet: nothing to act on, whatever the sink returns.
	_ = sink.Accept(context.Background(), f.next(sinkTarget, core.State{}, false))
	waitObserve(t, h, sink, sinkTarget, nil, "before the first sync")
	st := synced(t, a, b)
	f.send(t, sink, sinkTarget, st)
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "first sync")
	stale := st
	stale.Stale = core.Staleness{Since: time.Now(), Reason: "backend down", Kind: core.KindUnavailable}
	f.send(t, sink, sinkTarget, stale)
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "stale: the last good endpoints stay")
	f.send(t, sink, sinkTarget, core.State{Synced: true})
	waitObserve(t, h, sink, sinkTarget, nil, "scale to zero")
	f.send(t, sink, sinkTarget, st)
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "back from zero")
}

func sinkConditions(t *testing.T, h SinkHarness) {
	sink, f := h.NewSink(t), newFeeder()
	a, b, c := endpoint("a", 1), endpoint("b", 2), endpoint("c", 3)
	for i, st := range []core.State{
		synced(t, a, b, c),
		synced(t, a, withConditions(b, false, false, false), c),                                                                      // b not ready
		synced(t, a, withConditions(b, false, true, true), c),                                                                        // b draining
		synced(t, withConditions(a, false, true, true), withConditions(b, false, true, true), withConditions(c, false, false, true)), // none ready: fallback
		synced(t, withConditions(a, false, true, true), b, withConditions(c, false, false, true)),                                    // b ready again
		synced(t, a, b, c),
	} {
		f.send(t, sink, sinkTarget, st)
		waitObserve(t, h, sink, sinkTarget, expect(h, st), fmt.Sprintf("step %d", i))
	}
}

func sinkSeveralTargets(t *testing.T, h SinkHarness) {
	if !h.MultiTarget() {
		t.Skip("coretest: one target per sink")
	}
	sink, f := h.NewSink(t), newFeeder()
	a, b, c := endpoint("a", 1), endpoint("b", 2), endpoint("c", 3)
	one, two := synced(t, a, b), synced(t, a, c) // the same endpoint ID in both targets
	f.send(t, sink, sinkTarget, one)
	f.send(t, sink, sinkTarget2, two)
	waitObserve(t, h, sink, sinkTarget, expect(h, one), "first target")
	waitObserve(t, h, sink, sinkTarget2, expect(h, two), "second target")
	f.send(t, sink, sinkTarget, core.State{Synced: true})
	waitObserve(t, h, sink, sinkTarget, nil, "first target emptied")
	waitObserve(t, h, sink, sinkTarget2, expect(h, two), "second target untouched")
}

func sinkCancelled(t *testing.T, h SinkHarness) {
	sink, f := h.NewSink(t), newFeeder()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- sink.Accept(ctx, f.next(sinkTarget, synced(t, endpoint("a", 1)), false)) }()
	select {
	case <-done:
	case <-time.After(h.Timeout()):
		t.Fatalf("coretest: Update with a cancelled context did not return within %v", h.Timeout())
	}
}

func sinkThroughHub(t *testing.T, h SinkHarness) {
	sink := h.NewSink(t)
	src := NewScript()
	hub := Hub(t, src)
	if _, err := hub.Subscribe("conformance", sink, sinkTarget); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout())
	defer cancel()
	if err := src.WaitRunning(ctx, sinkTarget, 1); err != nil {
		t.Fatal(err)
	}
	var st core.State
	for i := range 50 {
		var eps []*core.Endpoint
		for j := range 5 {
			if (i+j)%3 != 0 {
				eps = append(eps, endpoint(fmt.Sprintf("e%d", j), j+1+(i%2)*20))
			}
		}
		st = synced(t, eps...)
		src.Publish(sinkTarget, st.Endpoints)
	}
	waitObserve(t, h, sink, sinkTarget, expect(h, st), "after a burst through a hub")
}
