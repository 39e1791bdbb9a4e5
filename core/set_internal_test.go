package core

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkSet verifies a set's internal invariants and its content against a model.
func checkSet(t *testing.T, s Set, model map[string]*Endpoint) {
	t.Helper()
	if testing.Verbose() {
		var sizes []int
		for _, c := range s.chunks {
			sizes = append(sizes, len(c.eps))
		}
		t.Logf("chunks %v", sizes)
	}
	if s.n != countOf(s.chunks) || s.Len() != len(model) {
		t.Fatalf("Len = %d, counted %d, model %d", s.Len(), countOf(s.chunks), len(model))
	}
	var prev string
	i := 0
	for ci, c := range s.chunks {
		if len(c.eps) == 0 || len(c.eps) > chunkMax {
			t.Fatalf("chunk %d has %d endpoints", ci, len(c.eps))
		}
		for _, e := range c.eps {
			if i > 0 && e.ID <= prev {
				t.Fatalf("not sorted: %q after %q", e.ID, prev)
			}
			if model[e.ID] != e {
				t.Fatalf("endpoint %q is not the model's", e.ID)
			}
			if s.At(i) != e {
				t.Fatalf("At(%d) wrong", i)
			}
			if g, ok := s.Get(e.ID); !ok || g != e {
				t.Fatalf("Get(%q) wrong", e.ID)
			}
			prev = e.ID
			i++
		}
	}
	if _, ok := s.Get("zz-missing"); ok {
		t.Fatal("Get found a missing ID")
	}
}

func genEndpoint(r *rand.Rand, id int) *Endpoint {
	return &Endpoint{ID: fmt.Sprintf("pod-%05d", id), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", r.IntN(4), id/250, id%250)}, Port: 80}
}

// FuzzSetOperations applies random batches of puts and removals to sets of up
// to a few thousand endpoints, so that chunks split and merge, and checks
// every result against a plain map, and Diff and Equal against the model's.
func FuzzSetOperations(f *testing.F) {
	f.Add(uint64(1), uint16(0), uint8(40))
	f.Add(uint64(2), uint16(3000), uint8(60))
	f.Add(uint64(3), uint16(129), uint8(200))
	f.Fuzz(func(t *testing.T, seed uint64, initial uint16, steps uint8) {
		r := rand.New(rand.NewPCG(seed, seed>>7))
		space := int(initial%4000) + 50
		model := map[string]*Endpoint{}
		var eps []*Endpoint
		for i := range int(initial % 4000) {
			e := genEndpoint(r, i)
			model[e.ID] = e
			eps = append(eps, e)
		}
		s, err := NewSet(eps...)
		if err != nil {
			t.Fatal(err)
		}
		checkSet(t, s, model)
		for range steps {
			next := maps.Clone(model)
			var ns Set
			if r.IntN(2) == 0 {
				var put []*Endpoint
				seen := map[int]bool{}
				for range r.IntN(300) + 1 {
					id := r.IntN(space)
					if !seen[id] {
						seen[id] = true
						e := genEndpoint(r, id)
						put = append(put, e)
						next[e.ID] = e
					}
				}
				if ns, err = s.With(put...); err != nil {
					t.Fatal(err)
				}
			} else {
				var ids []string
				for range r.IntN(300) + 1 {
					id := fmt.Sprintf("pod-%05d", r.IntN(space))
					ids = append(ids, id)
					delete(next, id)
				}
				ns = s.Without(ids...)
			}
			checkSet(t, ns, next)
			checkSet(t, s, model) // the original is unchanged

			d := Diff(s, ns)
			var added, removed, changed []string
			for id, e := range next {
				if old, ok := model[id]; !ok {
					added = append(added, id)
				} else if !old.Equal(e) {
					changed = append(changed, id)
				}
			}
			for id := range model {
				if _, ok := next[id]; !ok {
					removed = append(removed, id)
				}
			}
			idsOf := func(eps []*Endpoint) []string {
				out := []string{}
				for _, e := range eps {
					out = append(out, e.ID)
				}
				return out
			}
			var gotChanged []string
			for _, c := range d.Changed {
				gotChanged = append(gotChanged, c.New.ID)
			}
			for _, cmp := range [][2][]string{{idsOf(d.Added), added}, {idsOf(d.Removed), removed}, {gotChanged, changed}} {
				slices.Sort(cmp[1])
				if !slices.Equal(cmp[0], cmp[1]) && !(len(cmp[0]) == 0 && len(cmp[1]) == 0) {
					t.Fatalf("diff %v, model %v", cmp[0], cmp[1])
				}
			}
			if s.Equal(ns) != d.Empty() {
				t.Fatalf("Equal = %v, diff empty = %v", s.Equal(ns), d.Empty())
			}
			// A copy with no shared chunk compares the same way.
			flat, err := NewSet(ns.Slice()...)
			if err != nil {
				t.Fatal(err)
			}
			if !flat.Equal(ns) || !Diff(flat, ns).Empty() {
				t.Fatal("an unshared copy differs")
			}
			s, model = ns, next
		}
	})
}

// Chunks stay bounded under heavy churn at one end: no degenerate list of
// tiny chunks, no giant chunk.
func TestSetChunksStayBounded(t *testing.T) {
	var s Set
	var err error
	for i := range 20000 {
		if s, err = s.With(&Endpoint{ID: fmt.Sprintf("%06d", i), Addresses: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
		if i >= 1000 {
			s = s.Without(fmt.Sprintf("%06d", i-1000))
		}
	}
	if s.Len() != 1000 {
		t.Fatalf("Len = %d", s.Len())
	}
	if len(s.chunks) > 1000/chunkMin+2 {
		t.Fatalf("%d chunks for 1000 endpoints", len(s.chunks))
	}
	for _, c := range s.chunks {
		if len(c.eps) > chunkMax {
			t.Fatalf("chunk of %d", len(c.eps))
		}
	}
}
