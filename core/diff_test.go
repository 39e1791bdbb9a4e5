package core_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
)

func TestDiff(t *testing.T) {
	a1, b1, c1 := ep("a", "1"), ep("b", "2"), ep("c", "3")
	b2 := ep("b", "2", "fd00::2")
	c1same := ep("c", "3") // equal data, other pointer
	notReady := &core.Endpoint{ID: "a", Addresses: []string{"1"}, Port: 8080, Conditions: core.Conditions{Ready: new(false)}}
	tests := []struct {
		name                    string
		old, new                []*core.Endpoint
		added, removed, changed string
	}{
		{name: "both empty"},
		{name: "all added", new: []*core.Endpoint{a1, b1}, added: "a,b"},
		{name: "all removed (scale to zero)", old: []*core.Endpoint{a1, b1}, removed: "a,b"},
		{name: "same pointers", old: []*core.Endpoint{a1, b1, c1}, new: []*core.Endpoint{a1, b1, c1}},
		{name: "equal copies are no change", old: []*core.Endpoint{c1}, new: []*core.Endpoint{c1same}},
		{name: "changed address", old: []*core.Endpoint{a1, b1}, new: []*core.Endpoint{a1, b2}, changed: "b"},
		{name: "condition change", old: []*core.Endpoint{a1}, new: []*core.Endpoint{notReady}, changed: "a"},
		{name: "mixed", old: []*core.Endpoint{a1, b1}, new: []*core.Endpoint{b2, c1}, added: "c", removed: "a", changed: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := core.Diff(coretest.Set(t, tt.old...), coretest.Set(t, tt.new...))
			join := func(eps []*core.Endpoint) string {
				var s []string
				for _, e := range eps {
					s = append(s, e.ID)
				}
				return strings.Join(s, ",")
			}
			var ch []string
			for _, c := range d.Changed {
				if c.Old.ID != c.New.ID {
					t.Fatalf("change pairs %q with %q", c.Old.ID, c.New.ID)
				}
				ch = append(ch, c.New.ID)
			}
			if got := join(d.Added); got != tt.added {
				t.Errorf("added = %q, want %q", got, tt.added)
			}
			if got := join(d.Removed); got != tt.removed {
				t.Errorf("removed = %q, want %q", got, tt.removed)
			}
			if got := strings.Join(ch, ","); got != tt.changed {
				t.Errorf("changed = %q, want %q", got, tt.changed)
			}
			if d.Empty() != (tt.added == "" && tt.removed == "" && tt.changed == "") {
				t.Errorf("Empty() = %v", d.Empty())
			}
		})
	}
}

// apply applies a delta to a set by ID, independently of core's own code, and
// fails when the delta does not fit the set it claims to start from.
func apply(prev core.Set, d core.Delta) (map[string]*core.Endpoint, error) {
	m := map[string]*core.Endpoint{}
	for e := range prev.All() {
		m[e.ID] = e
	}
	for _, e := range d.Removed {
		if m[e.ID] == nil || !m[e.ID].Equal(e) {
			return nil, fmt.Errorf("removed %q not in the previous state as sent", e.ID)
		}
		delete(m, e.ID)
	}
	for _, c := range d.Changed {
		if m[c.Old.ID] == nil || !m[c.Old.ID].Equal(c.Old) || c.Old.Equal(c.New) {
			return nil, fmt.Errorf("changed %q does not fit", c.Old.ID)
		}
		m[c.New.ID] = c.New
	}
	for _, e := range d.Added {
		if m[e.ID] != nil {
			return nil, fmt.Errorf("added %q already present", e.ID)
		}
		m[e.ID] = e
	}
	return m, nil
}

func sameAsSet(m map[string]*core.Endpoint, s core.Set) bool {
	if len(m) != s.Len() {
		return false
	}
	for e := range s.All() {
		if !m[e.ID].Equal(e) {
			return false
		}
	}
	return true
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 3, 0, 2, 1, 4, 2, 3, 0})
	f.Add([]byte{0, 1, 3, 0, 2, 1, 3, 0, 0, 1, 3, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		prev := core.Set{}
		for _, s := range coretest.States(t, data) {
			d := core.Diff(prev, s)
			got, err := apply(prev, d)
			if err != nil {
				t.Fatal(err)
			}
			if !sameAsSet(got, s) {
				t.Fatalf("applying the delta to the previous state does not give the new state")
			}
			if d.Empty() != prev.Equal(s) {
				t.Fatalf("Empty() = %v but Equal = %v", d.Empty(), prev.Equal(s))
			}
			prev = s
		}
	})
}

// FuzzPipeline publishes random state sequences through a real hub to a
// sink that is blocked at random points, so that states coalesce, and that
// fails at random (transiently, or asking for a resync). For the updates the
// sink accepts: each one's BaseSeq is the previous accepted Seq (0 after a
// resync), Set.Apply of its delta to the previous accepted state gives the
// new state exactly (and so does an independent apply), sequence numbers
// strictly increase, and the last one is the last state published.
func FuzzPipeline(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 3, 0, 2, 1, 4, 2, 3, 0}, uint16(0b1010), uint16(0))
	f.Add([]byte{0, 1, 3, 0, 2, 1, 3, 0, 0, 1, 3, 0, 1, 5, 3, 1}, uint16(0xffff), uint16(0b0110))
	f.Add([]byte{0, 1, 3, 0, 0, 2, 3, 0, 2, 1, 3, 0, 0, 3, 3, 0}, uint16(0b0101), uint16(0b1011_0110))
	f.Fuzz(func(t *testing.T, data []byte, blockMask, failMask uint16) {
		synctest.Test(t, func(t *testing.T) {
			seq := coretest.States(t, data)
			target := core.Target{Name: "svc"}
			src := coretest.NewScript()
			var mu sync.Mutex
			var accepted []core.Update
			calls := 0
			gate := make(chan struct{})
			close(gate)
			sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
				mu.Lock()
				g := gate
				mu.Unlock()
				<-g
				mu.Lock()
				defer mu.Unlock()
				calls++
				switch failMask >> (calls % 16) & 3 {
				case 1:
					return errors.New("transient")
				case 2:
					return fmt.Errorf("lost it: %w", core.ErrResync)
				}
				accepted = append(accepted, u)
				return nil
			})
			h := coretest.Hub(t, src, core.WithBackoff(time.Millisecond, time.Second))
			defer h.Close()
			if _, err := h.Subscribe("rec", sink, target); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			for i, s := range seq {
				mu.Lock()
				if blockMask&(1<<(i%16)) != 0 {
					select {
					case <-gate: // passing now: block from here on
						gate = make(chan struct{})
					default: // blocking already
					}
				} else {
					select {
					case <-gate:
					default:
						close(gate)
					}
				}
				mu.Unlock()
				src.Publish(target, s)
				synctest.Wait()
			}
			mu.Lock()
			select {
			case <-gate:
			default:
				close(gate)
			}
			failMask = 0 // from here on every call is accepted
			mu.Unlock()
			time.Sleep(time.Minute)
			synctest.Wait()

			mu.Lock()
			defer mu.Unlock()
			want := seq[len(seq)-1]
			if len(accepted) == 0 || !accepted[len(accepted)-1].State.Endpoints.Equal(want) {
				t.Fatalf("the sink did not end with the last state published")
			}
			prev, prevSeq := core.Set{}, uint64(0)
			for _, u := range accepted {
				if u.Seq <= prevSeq {
					t.Fatalf("seq %d after %d", u.Seq, prevSeq)
				}
				if u.BaseSeq != 0 && u.BaseSeq != prevSeq {
					t.Fatalf("seq %d: base %d, but the last accepted was %d", u.Seq, u.BaseSeq, prevSeq)
				}
				base := prev
				if u.BaseSeq == 0 {
					base = core.Set{}
				}
				got, err := apply(base, u.Delta)
				if err != nil {
					t.Fatalf("seq %d: %v", u.Seq, err)
				}
				if !sameAsSet(got, u.State.Endpoints) {
					t.Fatalf("seq %d: delta applied to the base state is not the new state", u.Seq)
				}
				next, err := base.Apply(u.Delta)
				if err != nil || !next.Equal(u.State.Endpoints) {
					t.Fatalf("seq %d: Set.Apply = %v, %v", u.Seq, ids(next), err)
				}
				if !slices.ContainsFunc(seq, u.State.Endpoints.Equal) {
					t.Fatalf("seq %d: a state that was never published", u.Seq)
				}
				prev, prevSeq = u.State.Endpoints, u.Seq
			}
		})
	})
}

// FuzzApply: Set.Apply of Diff(a, b) to a is b, for random pairs; and a
// delta applied to a set it was not computed from fails with ErrResync
// unless the result would be the same.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 3, 0, 2, 1, 4, 2, 3, 0})
	f.Add([]byte{0, 1, 3, 0, 2, 1, 3, 0, 0, 1, 3, 0, 1, 5, 3, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		ss := coretest.States(t, data)
		for i := range ss {
			for j := range ss {
				d := core.Diff(ss[i], ss[j])
				got, err := ss[i].Apply(d)
				if err != nil || !got.Equal(ss[j]) {
					t.Fatalf("Apply(Diff(s%d, s%d)) = %v, %v; want %v", i, j, ids(got), err, ids(ss[j]))
				}
				// Applied to a third set: either it fits exactly the way an
				// independent apply says, or it is a resync.
				for k := range ss {
					want, werr := apply(ss[k], d)
					got, err := ss[k].Apply(d)
					switch {
					case err != nil && !errors.Is(err, core.ErrResync):
						t.Fatalf("error %v does not wrap ErrResync", err)
					case err == nil && werr == nil && !sameAsSet(want, got):
						t.Fatalf("Apply to s%d differs from an independent apply", k)
					case err == nil && werr != nil && !onlyChangeMismatch(ss[k], d):
						t.Fatalf("Apply to s%d accepted a delta that does not fit: %v", k, werr)
					}
				}
			}
		}
	})
}

// onlyChangeMismatch: the independent apply also checks a changed entry's
// old version, which Set.Apply does not need; that is the only difference
// allowed.
func onlyChangeMismatch(s core.Set, d core.Delta) bool {
	for _, e := range d.Removed {
		if _, ok := s.Get(e.ID); !ok {
			return false
		}
	}
	for _, e := range d.Added {
		if _, ok := s.Get(e.ID); ok {
			return false
		}
	}
	for _, c := range d.Changed {
		if _, ok := s.Get(c.New.ID); !ok {
			return false
		}
	}
	return true
}
