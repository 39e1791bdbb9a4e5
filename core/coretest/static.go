package coretest

import (
	"context"
	"fmt"
	"sync"

	"github.com/disco-lb/disco/core"
)

// Static is a source of fixed endpoints, for tests and examples. Its
// sets can be replaced at run time with Set; a target it does not know fails
// with ErrNotFound. Safe for concurrent use; the zero value is not usable,
// call NewStatic.
type Static struct {
	mu      sync.Mutex
	sets    map[core.Target]core.Set
	watches map[core.Target]map[*staticWatch]struct{}
}

type staticWatch struct{ pub core.Publisher }

var _ core.Source = (*Static)(nil)

// NewStatic returns a static source serving sets.
func NewStatic(sets map[core.Target]core.Set) *Static {
	s := &Static{sets: make(map[core.Target]core.Set, len(sets)), watches: map[core.Target]map[*staticWatch]struct{}{}}
	for t, set := range sets {
		s.sets[t] = set
	}
	return s
}

// Set replaces the endpoints of target and publishes them to running watches.
func (s *Static) Set(target core.Target, set core.Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets[target] = set
	for w := range s.watches[target] {
		w.pub.Publish(set)
	}
}

// Delete forgets target; running watches of it fail with ErrNotFound.
func (s *Static) Delete(target core.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sets, target)
	for w := range s.watches[target] {
		w.pub.Fail(fmt.Errorf("coretest: static source has no target %s: %w", target, core.ErrNotFound))
	}
}

// Watch publishes the target's set, then every replacement, until ctx is done.
func (s *Static) Watch(ctx context.Context, target core.Target, pub core.Publisher) error {
	w := &staticWatch{pub: pub}
	s.mu.Lock()
	if s.watches[target] == nil {
		s.watches[target] = map[*staticWatch]struct{}{}
	}
	s.watches[target][w] = struct{}{}
	if set, ok := s.sets[target]; ok {
		pub.Publish(set)
	} else {
		pub.Fail(fmt.Errorf("coretest: static source has no target %s: %w", target, core.ErrNotFound))
	}
	s.mu.Unlock()

	<-ctx.Done()

	s.mu.Lock()
	delete(s.watches[target], w)
	if len(s.watches[target]) == 0 {
		delete(s.watches, target)
	}
	s.mu.Unlock()
	return nil
}
