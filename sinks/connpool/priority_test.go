package connpool_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/connpool"
)

// RFC 2782 in the pool: the lowest priority with ready endpoints takes
// every call; the next one only when none of a lower one is ready, or
// (WithUsable) none of them can be reached.
func TestPriorityFallsBackOnlyWhenNoneIsLeft(t *testing.T) {
	var mu sync.Mutex
	down := map[string]bool{}
	p := must(connpool.New(func(_ context.Context, e *core.Endpoint) (string, error) { return e.ID, nil }, func(string) error { return nil },
		connpool.WithPolicy(connpool.RoundRobin),
		connpool.WithUsable(func(c string) bool { mu.Lock(); defer mu.Unlock(); return !down[c] })))
	defer p.Close()
	f := &feed{t: t, sink: p}
	ep := func(id string, prio uint32, ready bool) *core.Endpoint {
		return &core.Endpoint{ID: id, Addresses: []string{id}, Priority: prio, Conditions: core.Conditions{Ready: new(ready)}}
	}
	picks := func() map[string]int {
		m := map[string]int{}
		ctx := ctxFor(t, 5*time.Second)
		for range 30 {
			h, err := p.Pick(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m[h.Conn]++
			h.Done()
		}
		return m
	}
	waitLen := func(n int) {
		deadline := time.Now().Add(5 * time.Second)
		for p.Len() != n {
			if time.Now().After(deadline) {
				t.Fatalf("Len %d, want %d", p.Len(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	f.set(ep("a", 10, true), ep("b", 10, true), ep("backup", 20, true))
	waitLen(2)
	if m := picks(); m["backup"] != 0 || m["a"] == 0 || m["b"] == 0 {
		t.Fatalf("picked %v, want the priority-10 endpoints only", m)
	}
	f.set(ep("a", 10, false), ep("b", 10, true), ep("backup", 20, true))
	waitLen(1)
	if m := picks(); m["b"] != 30 {
		t.Fatalf("picked %v, want b, the last ready one of priority 10", m)
	}
	f.set(ep("a", 10, false), ep("b", 10, false), ep("backup", 20, true))
	waitLen(1)
	if m := picks(); m["backup"] != 30 {
		t.Fatalf("picked %v, want the backup once no primary is ready", m)
	}
	f.set(ep("a", 10, true), ep("b", 10, true), ep("backup", 20, true))
	waitLen(2)
	mu.Lock()
	down["a"], down["b"] = true, true // listed and ready, but unreachable
	mu.Unlock()
	if m := picks(); m["backup"] != 30 {
		t.Fatalf("picked %v, want the backup while no primary can be reached", m)
	}
	mu.Lock()
	clear(down)
	mu.Unlock()
	f.set(ep("a", 5, true), ep("b", 10, true), ep("backup", 20, true)) // a priority changes in place
	waitLen(1)
	if m := picks(); m["a"] != 30 {
		t.Fatalf("picked %v, want a, now the only priority-5 endpoint", m)
	}
}
