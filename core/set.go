package core

import (
	"encoding/json"
	"fmt"
	"iter"
	"slices"
	"strings"
)

// Set is an immutable set of endpoints sorted by ID, with unique IDs. The zero
// Set is empty and ready to use.
//
// A Set is persistent: it is stored as a list of immutable chunks of up to
// 128 endpoints, and Set.With or Set.Without on a large set copies only the
// chunks they touch plus the chunk list, sharing the rest with the original.
// Sets derived from each other compare (Equal, Diff) chunk by chunk: a shared
// chunk costs one pointer comparison. Publishing a one-endpoint change of a
// 10,000-endpoint target so costs a few kilobytes, not a copy of the target.
//
// A Set is a value; copying it is cheap and safe. Nothing reachable from it
// may be modified (see Endpoint).
type Set struct {
	chunks []*chunk
	n      int
}

// chunk is an immutable run of endpoints in ID order, never empty.
type chunk struct {
	eps []*Endpoint
}

const (
	chunkSize = 64  // endpoints per chunk when a set is built
	chunkMax  = 128 // a chunk growing past this splits in two
	chunkMin  = 16  // a chunk shrinking below this merges with a neighbour
)

func (c *chunk) last() string { return c.eps[len(c.eps)-1].ID }

// setOf cuts a sorted, validated slice into chunks of chunkSize.
func setOf(eps []*Endpoint) Set {
	if len(eps) == 0 {
		return Set{}
	}
	chunks := make([]*chunk, 0, (len(eps)+chunkSize-1)/chunkSize)
	for len(eps) > 0 {
		k := min(chunkSize, len(eps))
		chunks = append(chunks, &chunk{eps: eps[:k:k]})
		eps = eps[k:]
	}
	return Set{chunks: chunks, n: countOf(chunks)}
}

func countOf(chunks []*chunk) int {
	n := 0
	for _, c := range chunks {
		n += len(c.eps)
	}
	return n
}

// NewSet builds a set from eps in any order. It validates every endpoint,
// fills empty IDs (see Endpoint.ID) and rejects duplicate IDs, naming the
// offender. The caller's slice is not kept; the endpoints are (see Endpoint).
func NewSet(eps ...*Endpoint) (Set, error) {
	out, err := sortedValid(eps)
	if err != nil {
		return Set{}, err
	}
	return setOf(out), nil
}

func sortedValid(eps []*Endpoint) ([]*Endpoint, error) {
	out := make([]*Endpoint, len(eps))
	for i, e := range eps {
		if err := e.Validate(); err != nil {
			return nil, err
		}
		out[i] = withID(e)
	}
	slices.SortFunc(out, byID)
	for i := 1; i < len(out); i++ {
		if out[i].ID == out[i-1].ID {
			return nil, fmt.Errorf("core: duplicate endpoint ID %q: %w", out[i].ID, ErrInvalid)
		}
	}
	return out, nil
}

func byID(a, b *Endpoint) int { return strings.Compare(a.ID, b.ID) }

func cmpID(e *Endpoint, id string) int { return strings.Compare(e.ID, id) }

// Len returns the number of endpoints.
func (s Set) Len() int { return s.n }

// At returns the i-th endpoint in ID order, in O(number of chunks). It panics
// if i is out of range, like a slice index. Prefer All to iterate.
func (s Set) At(i int) *Endpoint {
	if i >= 0 {
		for _, c := range s.chunks {
			if i < len(c.eps) {
				return c.eps[i]
			}
			i -= len(c.eps)
		}
	}
	panic(fmt.Sprintf("core: Set.At: index out of range [%d] with length %d", i, s.n))
}

// All iterates over the endpoints in ID order.
func (s Set) All() iter.Seq[*Endpoint] {
	return func(yield func(*Endpoint) bool) {
		for _, c := range s.chunks {
			for _, e := range c.eps {
				if !yield(e) {
					return
				}
			}
		}
	}
}

// Slice returns the endpoints in ID order, in a new slice the caller owns.
func (s Set) Slice() []*Endpoint {
	out := make([]*Endpoint, 0, s.n)
	for _, c := range s.chunks {
		out = append(out, c.eps...)
	}
	return out
}

// chunkFor returns the index of the chunk that holds id or would hold it:
// the first chunk whose last ID is >= id, else the last chunk.
func (s Set) chunkFor(id string) int {
	i, _ := slices.BinarySearchFunc(s.chunks, id, func(c *chunk, id string) int {
		return strings.Compare(c.last(), id)
	})
	return min(i, len(s.chunks)-1)
}

// Get returns the endpoint with the given ID.
func (s Set) Get(id string) (*Endpoint, bool) {
	if s.n == 0 {
		return nil, false
	}
	c := s.chunks[s.chunkFor(id)]
	j, ok := slices.BinarySearchFunc(c.eps, id, cmpID)
	if !ok {
		return nil, false
	}
	return c.eps[j], true
}

// With returns a set holding s's endpoints with eps put in: an endpoint whose
// ID is already present replaces it, any other is added. Only the chunks that
// receive an endpoint are copied; s is unchanged. Duplicate IDs inside eps are
// an error, as is an invalid endpoint.
func (s Set) With(eps ...*Endpoint) (Set, error) {
	if len(eps) == 0 {
		return s, nil
	}
	put, err := sortedValid(eps)
	if err != nil {
		return s, err
	}
	if s.n == 0 {
		return setOf(put), nil
	}
	return s.rebuild(func(ci int, c *chunk) []*Endpoint {
		// The puts that belong to chunk ci, in order.
		var mine []*Endpoint
		for len(put) > 0 && (ci == len(s.chunks)-1 || put[0].ID <= c.last()) {
			mine = append(mine, put[0])
			put = put[1:]
		}
		if len(mine) == 0 {
			return nil
		}
		out := make([]*Endpoint, 0, len(c.eps)+len(mine))
		i := 0
		for _, p := range mine {
			j, found := slices.BinarySearchFunc(c.eps[i:], p.ID, cmpID)
			out = append(out, c.eps[i:i+j]...)
			out = append(out, p)
			i += j
			if found {
				i++
			}
		}
		return append(out, c.eps[i:]...)
	}), nil
}

// Without returns a set holding s's endpoints except those with the given
// IDs; unknown IDs are ignored. Only the chunks that lose an endpoint are
// copied; s is unchanged.
func (s Set) Without(ids ...string) Set {
	if s.n == 0 || len(ids) == 0 {
		return s
	}
	drop := map[int][]string{}
	for _, id := range ids {
		ci := s.chunkFor(id)
		if _, ok := slices.BinarySearchFunc(s.chunks[ci].eps, id, cmpID); ok {
			drop[ci] = append(drop[ci], id)
		}
	}
	if len(drop) == 0 {
		return s
	}
	return s.rebuild(func(ci int, c *chunk) []*Endpoint {
		gone := drop[ci]
		if len(gone) == 0 {
			return nil
		}
		out := make([]*Endpoint, 0, len(c.eps))
		for _, e := range c.eps {
			if !slices.Contains(gone, e.ID) {
				out = append(out, e)
			}
		}
		return out
	})
}

// rebuild returns a set whose chunks are s's, except where edit returns a
// non-nil replacement for a chunk's endpoints. Replacements are split when
// too large, dropped when empty and merged with a neighbour when small, so
// chunks stay between chunkMin and chunkMax endpoints in the long run.
func (s Set) rebuild(edit func(ci int, c *chunk) []*Endpoint) Set {
	out := make([]*chunk, 0, len(s.chunks)+1)
	for ci, c := range s.chunks {
		eps := edit(ci, c)
		switch {
		case eps == nil:
			out = append(out, c)
			continue
		case len(eps) == 0:
			continue
		case len(eps) < chunkMin && len(out) > 0 && len(out[len(out)-1].eps)+len(eps) <= chunkMax:
			prev := out[len(out)-1]
			eps = append(slices.Clip(slices.Clone(prev.eps)), eps...)
			out = out[:len(out)-1]
		}
		for len(eps) > chunkMax { // leaves a last piece of chunkSize+1..chunkMax
			out = append(out, &chunk{eps: eps[:chunkSize:chunkSize]})
			eps = eps[chunkSize:]
		}
		out = append(out, &chunk{eps: slices.Clip(eps)})
	}
	if len(out) == 0 {
		return Set{}
	}
	return Set{chunks: out, n: countOf(out)}
}

// Equal reports whether both sets hold equal endpoints (see Endpoint.Equal).
// Shared chunks and endpoints cost one pointer comparison each.
func (s Set) Equal(o Set) bool {
	if s.n != o.n {
		return false
	}
	equal := true
	walk(s, o, func(x, y *Endpoint) bool {
		if x == nil || y == nil || !x.Equal(y) {
			equal = false
		}
		return equal
	})
	return equal
}

// walk visits, in ID order, the endpoints of a and b that are not shared by
// pointer: pairs with the same ID, or one side nil when an ID is in one set
// only. Runs of shared chunks are skipped whole. visit returns false to stop.
func walk(a, b Set, visit func(x, y *Endpoint) bool) {
	ca, cb := a.chunks, b.chunks
	i, j := 0, 0 // positions inside ca[0] and cb[0]
	for len(ca) > 0 && len(cb) > 0 {
		if i == 0 && j == 0 && ca[0] == cb[0] {
			ca, cb = ca[1:], cb[1:]
			continue
		}
		x, y := ca[0].eps[i], cb[0].eps[j]
		var ok bool
		switch c := strings.Compare(x.ID, y.ID); {
		case x == y:
			ok = true
			i++
			j++
		case c < 0:
			ok = visit(x, nil)
			i++
		case c > 0:
			ok = visit(nil, y)
			j++
		default:
			ok = visit(x, y)
			i++
			j++
		}
		if !ok {
			return
		}
		if i == len(ca[0].eps) {
			ca, i = ca[1:], 0
		}
		if j == len(cb[0].eps) {
			cb, j = cb[1:], 0
		}
	}
	for ; len(ca) > 0; ca, i = ca[1:], 0 {
		for _, x := range ca[0].eps[i:] {
			if !visit(x, nil) {
				return
			}
		}
	}
	for ; len(cb) > 0; cb, j = cb[1:], 0 {
		for _, y := range cb[0].eps[j:] {
			if !visit(nil, y) {
				return
			}
		}
	}
}

// Change is one endpoint whose data changed between two sets (same ID).
type Change struct {
	Old *Endpoint `json:"old"`
	New *Endpoint `json:"new"`
}

// Delta is what changed from one set to another: endpoints added, removed
// (their last version) and changed. Each list is in ID order.
type Delta struct {
	Added   []*Endpoint `json:"added,omitempty"`
	Removed []*Endpoint `json:"removed,omitempty"`
	Changed []Change    `json:"changed,omitempty"`
}

// Empty reports whether the delta holds no change.
func (d Delta) Empty() bool {
	return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0
}

// Diff computes the delta from old to new in one merge walk. Chunks and
// endpoints shared by pointer cost one comparison each, so diffing two sets
// derived from each other costs O(chunks + changes) and allocates only for
// the changes.
func Diff(old, new Set) Delta {
	var d Delta
	walk(old, new, func(x, y *Endpoint) bool {
		switch {
		case y == nil:
			d.Removed = append(d.Removed, x)
		case x == nil:
			d.Added = append(d.Added, y)
		case !x.Equal(y):
			d.Changed = append(d.Changed, Change{Old: x, New: y})
		}
		return true
	})
	return d
}

// Apply returns the set that d makes of s: the removed endpoints taken out,
// the changed ones replaced by their new version, the added ones put in. It
// is the inverse of Diff (s.Apply(Diff(s, t)) equals t), and what a
// receiver does with each delta it gets. Strict: a removed or changed ID
// that s does not hold, or an added ID it already holds, means d was not
// computed from s, and the error wraps ErrResync (ask the sender for the
// full state) and names the first such ID. Unchanged chunks stay shared.
func (s Set) Apply(d Delta) (Set, error) {
	if d.Empty() {
		return s, nil
	}
	mismatch := func(what, id string) (Set, error) {
		return s, fmt.Errorf("core: delta does not apply: %s %q: %w", what, id, ErrResync)
	}
	drop := make([]string, 0, len(d.Removed))
	for _, e := range d.Removed {
		if e == nil {
			return mismatch("removed endpoint is nil", "")
		}
		if _, ok := s.Get(e.ID); !ok {
			return mismatch("removed endpoint not held", e.ID)
		}
		drop = append(drop, e.ID)
	}
	put := make([]*Endpoint, 0, len(d.Added)+len(d.Changed))
	for _, c := range d.Changed {
		if c.New == nil {
			return mismatch("changed endpoint is nil", "")
		}
		if _, ok := s.Get(c.New.ID); !ok {
			return mismatch("changed endpoint not held", c.New.ID)
		}
		put = append(put, c.New)
	}
	for _, e := range d.Added {
		if e == nil {
			return mismatch("added endpoint is nil", "")
		}
		if _, ok := s.Get(e.ID); ok {
			return mismatch("added endpoint already held", e.ID)
		}
		put = append(put, e)
	}
	next, err := s.Without(drop...).With(put...)
	if err != nil {
		return s, fmt.Errorf("core: delta does not apply: %w: %w", err, ErrResync)
	}
	if want := s.Len() - len(drop) + len(d.Added); next.Len() != want {
		return s, fmt.Errorf("core: delta does not apply: an ID is both removed and put: %w", ErrResync)
	}
	return next, nil
}

// MarshalJSON encodes the set as a JSON array of endpoints in ID order.
func (s Set) MarshalJSON() ([]byte, error) {
	return json.Marshal(s.Slice())
}

// UnmarshalJSON decodes a JSON array of endpoints with NewSet's validation.
func (s *Set) UnmarshalJSON(b []byte) error {
	var eps []*Endpoint
	if err := json.Unmarshal(b, &eps); err != nil {
		return fmt.Errorf("core: decode endpoint set: %w", err)
	}
	set, err := NewSet(eps...)
	if err != nil {
		return err
	}
	*s = set
	return nil
}
