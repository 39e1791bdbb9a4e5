package core_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/wire"
)

// slowReturnSource counts concurrent Watch calls per target and, once its
// context ends, takes a while to return (a source that flushes or waits for
// a connection to close).
type slowReturnSource struct {
	linger  time.Duration
	mu      sync.Mutex
	running map[core.Target]int
	maxSeen atomic.Int32
	calls   atomic.Int32
}

func (s *slowReturnSource) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	s.calls.Add(1)
	s.mu.Lock()
	if s.running == nil {
		s.running = map[core.Target]int{}
	}
	s.running[t]++
	if n := int32(s.running[t]); n > s.maxSeen.Load() {
		s.maxSeen.Store(n)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running[t]--
		s.mu.Unlock()
	}()
	pub.Publish(core.Set{})
	<-ctx.Done()
	time.Sleep(s.linger) // still returning
	return nil
}

// A new subscriber arriving while the last one's Watch is still returning
// gets a new Watch only after the old one has returned: one Watch per target
// per hub at any time.
func TestOneWatchPerTargetWhileTheOldOneReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &slowReturnSource{linger: time.Second}
		h := coretest.Hub(t, src)
		defer h.Close()
		for range 5 {
			sub := subscribe(t, h, "a", coretest.NewRecorder(), svc)
			synctest.Wait()
			// Close from another goroutine: Close waits for the Watch to
			// return, and the next subscriber comes meanwhile.
			closed := make(chan struct{})
			go func() { sub.Close(); close(closed) }()
			synctest.Wait()
			rec := coretest.NewRecorder()
			next := subscribe(t, h, "b", rec, svc)
			synctest.Wait()
			<-closed
			if err := next.WaitSynced(context.Background()); err != nil {
				t.Fatal(err)
			}
			next.Close()
		}
		if n := src.maxSeen.Load(); n != 1 {
			t.Fatalf("%d Watch calls of one target ran at once, want 1", n)
		}
		if n := src.calls.Load(); n < 10 {
			t.Fatalf("%d Watch calls, want one per subscription (10)", n)
		}
	})
}

// Commits of a Replica only move forward within an epoch, whatever order
// concurrent receivers commit in; a new epoch starts over.
func TestReplicaCommitsAreMonotonicWithinAnEpoch(t *testing.T) {
	r := wire.NewReplica()
	set := coretest.Set(t, ep("a", "10.0.0.1"))
	mk := func(epoch string, seq uint64) core.Update {
		return core.Update{Target: svc, Epoch: epoch, Seq: seq, State: core.State{Endpoints: set, Synced: true}}
	}
	r.Commit(mk("e1", 82))
	r.Commit(mk("e1", 80)) // a slower receiver commits an older update late
	if _, epoch, seq, _ := r.State(svc); epoch != "e1" || seq != 82 {
		t.Fatalf("replica at %s/%d after committing 82 then 80, want e1/82", epoch, seq)
	}
	r.Commit(mk("e2", 3)) // the sender restarted
	if _, epoch, seq, _ := r.State(svc); epoch != "e2" || seq != 3 {
		t.Fatalf("replica at %s/%d, want the new epoch e2/3", epoch, seq)
	}
	// Concurrent commits of seqs 1..200 end at 200.
	var wg sync.WaitGroup
	for i := 200; i >= 1; i-- {
		wg.Add(1)
		go func() { defer wg.Done(); r.Commit(mk("e3", uint64(i))) }()
	}
	wg.Wait()
	if _, _, seq, _ := r.State(svc); seq != 200 {
		t.Fatalf("replica at seq %d after concurrent commits, want 200", seq)
	}
}

// A sink may close its own subscription from inside Accept: Close returns,
// the subscription's goroutine ends once Accept returns, no update follows,
// and the target's watch stops.
func TestSubscriptionCloseFromInsideAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := coretest.NewScript()
		h := coretest.Hub(t, src)
		defer h.Close()
		var sub *core.Subscription
		var calls atomic.Int32
		returned := make(chan struct{})
		ready := make(chan struct{})
		sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
			<-ready
			if calls.Add(1) == 2 {
				sub.Close() // deadlocked before
				if ctx.Err() == nil {
					t.Error("the context of the Update that closed its subscription is not cancelled")
				}
				close(returned)
			}
			return nil
		})
		sub = subscribe(t, h, "self-closing", sink, svc)
		close(ready)
		synctest.Wait()
		src.Publish(svc, coretest.Set(t, ep("a", "10.0.0.1")))
		synctest.Wait()
		src.Publish(svc, coretest.Set(t, ep("b", "10.0.0.2")))
		synctest.Wait()
		select {
		case <-returned:
		default:
			t.Fatal("Close called inside Accept did not return")
		}
		src.Publish(svc, coretest.Set(t, ep("c", "10.0.0.3")))
		synctest.Wait()
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d updates, want none after the Close", n)
		}
		if _, watched := h.State(svc); watched {
			t.Fatal("the target is still watched after its only subscription closed itself")
		}
		sub.Close() // idempotent from outside too
	})
}
