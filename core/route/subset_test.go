package route_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/disco-lb/disco/core/route"
)

func names(prefix string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, from+i)
	}
	return out
}

// check requires what Subsets promises of one assignment: each client has
// min(k, backends) distinct backends that exist, and every backend has
// ⌊m⌋ or ⌈m⌉ clients.
func check(t *testing.T, s *route.Subsets, clients, backends []string) {
	t.Helper()
	k := min(s.K(), len(backends))
	load := map[string]int{}
	for _, b := range backends {
		load[b] = 0
	}
	for _, c := range clients {
		sub := s.Of(c)
		if len(sub) != k {
			t.Fatalf("client %s has %d backends, want %d", c, len(sub), k)
		}
		if !slices.IsSorted(sub) || len(slices.Compact(slices.Clone(sub))) != k {
			t.Fatalf("client %s: subset %v not sorted and distinct", c, sub)
		}
		for _, b := range sub {
			if _, ok := load[b]; !ok {
				t.Fatalf("client %s has backend %s, which does not exist", c, b)
			}
			load[b]++
		}
	}
	if len(backends) == 0 {
		return
	}
	lo := len(clients) * k / len(backends)
	for b, n := range load {
		if n != lo && n != lo+1 {
			t.Fatalf("backend %s has %d clients, want %d or %d (%d clients × %d / %d backends)", b, n, lo, lo+1, len(clients), k, len(backends))
		}
	}
}

func moved(before map[string][]string, s *route.Subsets, clients []string) int {
	n := 0
	for _, c := range clients {
		for _, b := range s.Of(c) {
			if !slices.Contains(before[c], b) {
				n++
			}
		}
	}
	return n
}

func snapshot(s *route.Subsets, clients []string) map[string][]string {
	out := map[string][]string{}
	for _, c := range clients {
		out[c] = slices.Clone(s.Of(c))
	}
	return out
}

func TestSubsetsBalanceAndChurn(t *testing.T) {
	for _, tc := range []struct{ clients, backends, k int }{{300, 300, 10}, {1000, 100, 10}, {50, 7, 3}, {10, 100, 5}, {7, 5, 5}, {3, 5, 10}} {
		t.Run(fmt.Sprintf("%dx%d/k=%d", tc.clients, tc.backends, tc.k), func(t *testing.T) {
			clients, backends := names("client-", 0, tc.clients), names("10.0.0.", 0, tc.backends)
			s := route.NewSubsets(tc.k)
			if ch := s.Assign(clients, backends); len(ch) != len(clients) {
				t.Fatalf("first Assign changed %d clients, want all %d", len(ch), len(clients))
			}
			check(t, s, clients, backends)
			if ch := s.Assign(clients, backends); len(ch) != 0 {
				t.Fatalf("the same input changed %d clients", len(ch))
			}
			// The bound: an added or removed backend moves at most ⌈m⌉+1
			// connections (m: clients per backend), a client coming or
			// going none of the others'.
			m := (tc.clients*min(tc.k, tc.backends) + tc.backends - 1) / tc.backends
			before := snapshot(s, clients)
			added := append(slices.Clone(backends), "10.9.9.9")
			s.Assign(clients, added)
			check(t, s, clients, added)
			if n := moved(before, s, clients); n > m+1 {
				t.Errorf("an added backend moved %d connections, want at most %d", n, m+1)
			}
			before = snapshot(s, clients)
			s.Assign(clients, backends)
			check(t, s, clients, backends)
			if n := moved(before, s, clients); n > m+1 {
				t.Errorf("a removed backend moved %d connections, want at most %d", n, m+1)
			}
			before = snapshot(s, clients)
			more := append(slices.Clone(clients), "client-new")
			s.Assign(more, backends)
			check(t, s, more, backends)
			if n := moved(before, s, clients); n != 0 {
				t.Errorf("a new client moved %d connections of the others", n)
			}
			before = snapshot(s, clients)
			s.Assign(clients[1:], backends)
			check(t, s, clients[1:], backends)
			if n := moved(before, s, clients[1:]); n > tc.k {
				t.Errorf("a client leaving moved %d connections of the others", n)
			}
		})
	}
}

// TestSubsetsRandomChanges drives one Subsets through random changes of
// clients, backends and k, checking every assignment, and that two of them
// given the same history agree (no map order leaks in).
func TestSubsetsRandomChanges(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	a, b := route.NewSubsets(4), route.NewSubsets(4)
	clients, backends := names("c", 0, 40), names("b", 0, 30)
	nc, nb := 40, 30
	for step := range 500 {
		switch r.IntN(6) {
		case 0:
			clients = append(clients, fmt.Sprintf("c%d", nc))
			nc++
		case 1:
			if len(clients) > 1 {
				i := r.IntN(len(clients))
				clients = slices.Delete(clients, i, i+1)
			}
		case 2, 3:
			backends = append(backends, fmt.Sprintf("b%d", nb))
			nb++
		case 4:
			if len(backends) > 0 {
				j := r.IntN(len(backends))
				backends = slices.Delete(backends, j, j+1)
			}
		case 5: // a rollout step: one replaced
			if len(backends) > 0 {
				backends[r.IntN(len(backends))] = fmt.Sprintf("b%d", nb)
				nb++
			}
		}
		ca, cb := a.Assign(clients, backends), b.Assign(clients, backends)
		if !slices.Equal(ca, cb) {
			t.Fatalf("step %d: two Subsets with the same history changed %v and %v", step, ca, cb)
		}
		check(t, a, clients, backends)
		for _, c := range clients {
			if !slices.Equal(a.Of(c), b.Of(c)) {
				t.Fatalf("step %d: client %s: %v vs %v", step, c, a.Of(c), b.Of(c))
			}
		}
	}
}

func TestSubsetsEdges(t *testing.T) {
	s := route.NewSubsets(3)
	if ch := s.Assign([]string{"a", "a", "b"}, nil); len(ch) != 0 || s.Of("a") != nil {
		t.Fatalf("no backends: changed %v, a has %v", ch, s.Of("a"))
	}
	s.Assign([]string{"a", "b"}, []string{"x", "y", "x"})
	if got := s.Of("a"); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("fewer backends than k: a has %v, want both", got)
	}
	if route.NewSubsets(0).K() != 1 {
		t.Fatal("k 0 should be 1")
	}
}

func TestRendezvous(t *testing.T) {
	ids := names("10.0.0.", 0, 100)
	got := route.Rendezvous("pod-a", ids, 10)
	if len(got) != 10 || !slices.IsSorted(got) {
		t.Fatalf("Rendezvous: %v", got)
	}
	if !slices.Equal(got, route.Rendezvous("pod-a", reversed(ids), 10)) {
		t.Fatal("not stable")
	}
	// One id removed moves at most one; one added at most one.
	for i := range ids {
		less := slices.Delete(slices.Clone(ids), i, i+1)
		n := route.Rendezvous("pod-a", less, 10)
		diff := 0
		for _, x := range n {
			if !slices.Contains(got, x) {
				diff++
			}
		}
		if diff > 1 {
			t.Fatalf("removing %s moved %d", ids[i], diff)
		}
	}
	if all := route.Rendezvous("x", []string{"b", "a"}, 5); !slices.Equal(all, []string{"a", "b"}) {
		t.Fatalf("k ≥ ids: %v", all)
	}
	if other := route.Rendezvous("pod-b", ids, 10); slices.Equal(other, got) {
		t.Fatal("two seeds got the same subset of 10 from 100")
	}
}

func reversed(xs []string) []string {
	out := slices.Clone(xs)
	slices.Reverse(out)
	return out
}
