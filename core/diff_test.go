package core_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
)

func TestDiff(t *testing.T) {
	a1, b1, c1 := ep("a", "1"), ep("b", "2"), ep("c", "3")
	b2 := ep("b", "2", "fd00::2")
	c1same := ep("c", "3") // equal data, other pointer
	notReady := &core.Endpoint{ID: "a", Addresses: []string{"1"}, Port: 8080, Conditions: core.Conditions{Ready: core.Bool(false)}}
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

// states turns fuzz input into a sequence of sets, each derived from the
// previous by puts (new versions of up to 16 IDs) and removals.
func states(t *testing.T, data []byte) []core.Set {
	var out []core.Set
	var cur core.Set
	for i := 0; i+1 < len(data); i += 2 {
		op, arg := data[i], data[i+1]
		id := fmt.Sprintf("e%02d", arg%16)
		var err error
		switch op % 4 {
		case 0, 1: // put a version of id
			e := &core.Endpoint{ID: id, Addresses: []string{fmt.Sprintf("10.0.%d.%d", arg%16, op/4)}, Port: 80}
			if op%8 == 1 {
				e.Conditions.Ready = core.Bool(false)
			}
			cur, err = cur.With(e)
		case 2:
			cur = cur.Without(id)
		case 3: // emit a state
			out = append(out, cur)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return append(out, cur)
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 3, 0, 2, 1, 4, 2, 3, 0})
	f.Add([]byte{0, 1, 3, 0, 2, 1, 3, 0, 0, 1, 3, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		prev := core.Set{}
		for _, s := range states(t, data) {
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

// FuzzPipeline publishes random state sequences through a real pipeline to a
// sink that is blocked at random points, so that states coalesce. For the
// updates the sink accepts: applying each delta to the previous accepted state
// gives the new state, sequence numbers strictly increase, and the last one is
// the last state published.
func FuzzPipeline(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 3, 0, 2, 1, 4, 2, 3, 0}, uint16(0b1010))
	f.Add([]byte{0, 1, 3, 0, 2, 1, 3, 0, 0, 1, 3, 0, 1, 5, 3, 1}, uint16(0xffff))
	f.Fuzz(func(t *testing.T, data []byte, blockMask uint16) {
		seq := states(t, data)
		target := core.Target{Name: "svc"}
		src := coretest.NewScript()
		rec := coretest.NewRecorder()
		p := core.NewPipeline(src, []core.Target{target}, []core.NamedSink{core.Named("rec", rec)})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		defer func() { p.Close(); <-done }()
		if err := src.WaitRunning(ctx, target, 1); err != nil {
			t.Fatal(err)
		}
		for i, s := range seq {
			if blockMask&(1<<(i%16)) != 0 {
				rec.Block()
			} else {
				rec.Unblock()
			}
			src.Publish(target, s)
		}
		rec.Unblock()
		want := seq[len(seq)-1]
		err := rec.WaitFor(ctx, func(us []core.Update) bool {
			return len(us) > 0 && us[len(us)-1].State.Endpoints.Equal(want)
		})
		if err != nil {
			t.Fatal(err)
		}
		prev, prevSeq := core.Set{}, uint64(0)
		for _, u := range rec.Updates() {
			if u.Seq <= prevSeq {
				t.Fatalf("seq %d after %d", u.Seq, prevSeq)
			}
			got, err := apply(prev, u.Delta)
			if err != nil {
				t.Fatalf("seq %d: %v", u.Seq, err)
			}
			if !sameAsSet(got, u.State.Endpoints) {
				t.Fatalf("seq %d: delta applied to the previous accepted state is not the new state", u.Seq)
			}
			if !slices.ContainsFunc(seq, u.State.Endpoints.Equal) {
				t.Fatalf("seq %d: a state that was never published", u.Seq)
			}
			prev, prevSeq = u.State.Endpoints, u.Seq
		}
	})
}
