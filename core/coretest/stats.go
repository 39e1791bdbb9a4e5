package coretest

import (
	"sync"
	"time"

	"github.com/disco-lb/disco/core"
)

// Stats is a Metrics that keeps the figures in memory; read them with
// Snapshot. Safe for concurrent use. The zero value is ready to use.
type Stats struct {
	mu      sync.Mutex
	targets map[core.Target]*TargetStats
	sinks   map[string]map[core.Target]*SinkStats
}

var _ core.Metrics = (*Stats)(nil)

// TargetStats are the figures of one watched target.
type TargetStats struct {
	// Updates counts published states.
	Updates uint64
	// Seq is the latest state's sequence number.
	Seq uint64
	// Endpoints is the size of the latest state.
	Endpoints int
	// Synced and Stale are the latest state's.
	Synced bool
	Stale  core.Staleness
}

// StaleFor returns how long the target has been stale at now (0 if fresh).
func (t TargetStats) StaleFor(now time.Time) time.Duration {
	if !t.Stale.IsStale() {
		return 0
	}
	return now.Sub(t.Stale.Since)
}

// SinkStats are the figures of one sink for one target.
type SinkStats struct {
	Delivered uint64
	Coalesced uint64
	Errors    uint64
	// Retryable counts the errors that were retried.
	Retryable uint64
	// Resyncs counts the times the sink asked for the full state.
	Resyncs uint64
}

// StatsSnapshot is a copy of the figures at one moment.
type StatsSnapshot struct {
	Targets map[core.Target]TargetStats
	// Sinks maps a sink's name to its figures per target.
	Sinks map[string]map[core.Target]SinkStats
}

// Snapshot copies the current figures.
func (s *Stats) Snapshot() StatsSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := StatsSnapshot{Targets: map[core.Target]TargetStats{}, Sinks: map[string]map[core.Target]SinkStats{}}
	for t, ts := range s.targets {
		out.Targets[t] = *ts
	}
	for name, m := range s.sinks {
		cp := make(map[core.Target]SinkStats, len(m))
		for t, ss := range m {
			cp[t] = *ss
		}
		out.Sinks[name] = cp
	}
	return out
}

func (s *Stats) target(t core.Target) *TargetStats {
	if s.targets == nil {
		s.targets = map[core.Target]*TargetStats{}
	}
	ts := s.targets[t]
	if ts == nil {
		ts = &TargetStats{}
		s.targets[t] = ts
	}
	return ts
}

func (s *Stats) sink(name string, t core.Target) *SinkStats {
	if s.sinks == nil {
		s.sinks = map[string]map[core.Target]*SinkStats{}
	}
	m := s.sinks[name]
	if m == nil {
		m = map[core.Target]*SinkStats{}
		s.sinks[name] = m
	}
	ss := m[t]
	if ss == nil {
		ss = &SinkStats{}
		m[t] = ss
	}
	return ss
}

// StatePublished implements Metrics.
func (s *Stats) StatePublished(t core.Target, seq uint64, st core.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.target(t)
	ts.Updates++
	ts.Seq = seq
	ts.Endpoints = st.Endpoints.Len()
	ts.Synced = st.Synced
	ts.Stale = st.Stale
}

// UpdateDelivered implements Metrics.
func (s *Stats) UpdateDelivered(sink string, t core.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sink(sink, t).Delivered++
}

// UpdateCoalesced implements Metrics.
func (s *Stats) UpdateCoalesced(sink string, t core.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sink(sink, t).Coalesced++
}

// SinkError implements Metrics.
func (s *Stats) SinkError(sink string, t core.Target, retryable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sink(sink, t)
	ss.Errors++
	if retryable {
		ss.Retryable++
	}
}

// SinkResync implements Metrics.
func (s *Stats) SinkResync(sink string, t core.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sink(sink, t).Resyncs++
}

// TargetForgotten implements Metrics.
func (s *Stats) TargetForgotten(t core.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.targets, t)
	for name, m := range s.sinks {
		delete(m, t)
		if len(m) == 0 {
			delete(s.sinks, name)
		}
	}
}
