package connpool_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
	"github.com/disco-lb/disco/sinks/connpool"
)

// recorder counts the connections a pool builds and closes; a connection
// is its endpoint's ID.
type recorder struct {
	mu            sync.Mutex
	built, closed []string
	open          map[string]bool
}

func (r *recorder) build(_ context.Context, ep *core.Endpoint) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.built = append(r.built, ep.ID)
	r.open[ep.ID] = true
	return ep.ID, nil
}

func (r *recorder) close(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, id)
	delete(r.open, id)
	return nil
}

func (r *recorder) openIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.open {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (r *recorder) waitOpen(t *testing.T, want []string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(r.openIDs(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections %v, want %v", r.openIDs(), want)
		}
	}
}

func ids(eps []*core.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.ID
	}
	return out
}

// A pool with a subset of 3 connects to 3 of 20 endpoints, route.Rendezvous'
// choice for its seed, picks only those, and when one of them goes or stops
// being ready builds exactly one other connection.
func TestSubsetKeepsKConnections(t *testing.T) {
	r := &recorder{open: map[string]bool{}}
	p, err := connpool.New(r.build, r.close, connpool.WithSubset(3, "pod-a"), connpool.WithDrainTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var eps []*core.Endpoint
	for i := range 20 {
		eps = append(eps, &core.Endpoint{ID: fmt.Sprintf("ep-%02d", i), Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}, Port: 80})
	}
	f := &feed{t: t, sink: p}
	f.set(eps...)
	want := route.Rendezvous("pod-a", ids(eps), 3)
	r.waitOpen(t, want)
	picked := map[string]bool{}
	for range 300 {
		h, err := p.Pick(ctxFor(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		picked[h.Conn] = true
		h.Done()
	}
	if got := len(picked); got != 3 {
		t.Fatalf("picked %v, want the 3 of the subset", picked)
	}

	// One of the subset goes: one replacement, the other two stay.
	gone := want[0]
	rest := slices.DeleteFunc(slices.Clone(eps), func(e *core.Endpoint) bool { return e.ID == gone })
	f.set(rest...)
	want2 := route.Rendezvous("pod-a", ids(rest), 3)
	r.waitOpen(t, want2)
	if n := len(r.built); n != 4 {
		t.Fatalf("%d connections built, want 4 (3, then one replacement)", n)
	}
	// One stops being ready: replaced too; ready again: back.
	notReady := slices.Clone(rest)
	for i, e := range notReady {
		if e.ID == want2[1] {
			c := *e
			c.Conditions = core.Conditions{Ready: new(false)}
			notReady[i] = &c
		}
	}
	f.set(notReady...)
	want3 := route.Rendezvous("pod-a", slices.DeleteFunc(ids(rest), func(id string) bool { return id == want2[1] }), 3)
	r.waitOpen(t, want3)
	f.set(rest...)
	r.waitOpen(t, want2)

	if _, err := connpool.New(r.build, r.close, connpool.WithSubset(0, "")); err == nil {
		t.Fatal("WithSubset(0) accepted")
	}
}
