package connpool

import (
	"sync"
	"sync/atomic"
)

// pickSet is a set of members that readers sample without locks and one
// writer changes in O(1): add appends, remove swaps the last member into the
// hole. Readers may see a member that is being removed (they check
// member.removed) and never see a torn array: the array is replaced whole
// when it grows, and its length is published after the slot is written.
type pickSet[C any] struct {
	arr atomic.Pointer[pickArray[C]]
	mu  sync.Mutex // writers
}

type pickArray[C any] struct {
	s []atomic.Pointer[member[C]]
	n atomic.Int64
}

func newPickSet[C any]() *pickSet[C] {
	s := &pickSet[C]{}
	s.arr.Store(&pickArray[C]{s: make([]atomic.Pointer[member[C]], 8)})
	return s
}

// len is the number of members now.
func (s *pickSet[C]) len() int { return int(s.arr.Load().n.Load()) }

// at returns the i-th member of a snapshot, or nil if i is past the end.
func (a *pickArray[C]) at(i int) *member[C] {
	if i >= int(a.n.Load()) || i >= len(a.s) {
		return nil
	}
	return a.s[i].Load()
}

// add puts m in; idx records its position for remove. Amortized O(1).
func (s *pickSet[C]) add(m *member[C], idx *int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.arr.Load()
	n := int(a.n.Load())
	if n == len(a.s) {
		b := &pickArray[C]{s: make([]atomic.Pointer[member[C]], 2*len(a.s))}
		for i := range n {
			b.s[i].Store(a.s[i].Load())
		}
		b.n.Store(int64(n))
		s.arr.Store(b)
		a = b
	}
	a.s[n].Store(m)
	*idx = n
	a.n.Store(int64(n + 1))
}

// remove takes out the member at *idx (idxOf gives a member's index field),
// moving the last member into its place. O(1).
func (s *pickSet[C]) remove(idx *int, idxOf func(*member[C]) *int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.arr.Load()
	n := int(a.n.Load())
	i := *idx
	if i < 0 || i >= n {
		return
	}
	last := a.s[n-1].Load()
	a.s[i].Store(last)
	*idxOf(last) = i
	a.n.Store(int64(n - 1))
	a.s[n-1].Store(nil)
	*idx = -1
}
