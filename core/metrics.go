package core

import (
	"sync"
	"time"
)

// Metrics receives core's counters and gauges. Implement it to export them
// (a Prometheus adapter, say) without core depending on a metrics library;
// Stats is an in-memory implementation a program can read directly.
//
// Methods are called synchronously from core's goroutines, possibly
// concurrently, sometimes while core holds a lock for the target: they must
// be fast, must not block and must not call back into core.
type Metrics interface {
	// StatePublished: a new state of target was published (seq is its
	// sequence number). Counts updates per target; the state gives the
	// endpoint gauge and staleness.
	StatePublished(target Target, seq uint64, s State)
	// UpdateDelivered: sink accepted an update of target.
	UpdateDelivered(sink string, target Target)
	// UpdateCoalesced: a state of target replaced one the sink had not taken
	// yet.
	UpdateCoalesced(sink string, target Target)
	// SinkError: sink returned an error for target; retryable tells whether
	// core retries it (see IsPermanent).
	SinkError(sink string, target Target, retryable bool)
	// SinkResync: sink said it lost its state of target (ErrResync) and
	// gets the full state again.
	SinkResync(sink string, target Target)
	// TargetForgotten: nobody watches target any more; drop its series.
	TargetForgotten(target Target)
}

type nopMetrics struct{}

func (nopMetrics) StatePublished(Target, uint64, State) {}
func (nopMetrics) UpdateDelivered(string, Target)       {}
func (nopMetrics) UpdateCoalesced(string, Target)       {}
func (nopMetrics) SinkError(string, Target, bool)       {}
func (nopMetrics) SinkResync(string, Target)            {}
func (nopMetrics) TargetForgotten(Target)               {}

// Stats is a Metrics that keeps the figures in memory; read them with
// Snapshot. Safe for concurrent use. The zero value is ready to use.
type Stats struct {
	mu      sync.Mutex
	targets map[Target]*TargetStats
	sinks   map[string]map[Target]*SinkStats
}

var _ Metrics = (*Stats)(nil)

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
	Stale  Staleness
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
	Targets map[Target]TargetStats
	// Sinks maps a sink's name to its figures per target.
	Sinks map[string]map[Target]SinkStats
}

// Snapshot copies the current figures.
func (s *Stats) Snapshot() StatsSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := StatsSnapshot{Targets: map[Target]TargetStats{}, Sinks: map[string]map[Target]SinkStats{}}
	for t, ts := range s.targets {
		out.Targets[t] = *ts
	}
	for name, m := range s.sinks {
		cp := make(map[Target]SinkStats, len(m))
		for t, ss := range m {
			cp[t] = *ss
		}
		out.Sinks[name] = cp
	}
	return out
}

func (s *Stats) target(t Target) *TargetStats {
	if s.targets == nil {
		s.targets = map[Target]*TargetStats{}
	}
	ts := s.targets[t]
	if ts == nil {
		ts = &TargetStats{}
		s.targets[t] = ts
	}
	return ts
}

func (s *Stats) sink(name string, t Target) *SinkStats {
	if s.sinks == nil {
		s.sinks = map[string]map[Target]*SinkStats{}
	}
	m := s.sinks[name]
	if m == nil {
		m = map[Target]*SinkStats{}
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
func (s *Stats) StatePublished(t Target, seq uint64, st State) {
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
func (s *Stats) UpdateDelivered(sink string, t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sink(sink, t).Delivered++
}

// UpdateCoalesced implements Metrics.
func (s *Stats) UpdateCoalesced(sink string, t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sink(sink, t).Coalesced++
}

// SinkError implements Metrics.
func (s *Stats) SinkError(sink string, t Target, retryable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sink(sink, t)
	ss.Errors++
	if retryable {
		ss.Retryable++
	}
}

// SinkResync implements Metrics.
func (s *Stats) SinkResync(sink string, t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sink(sink, t).Resyncs++
}

// TargetForgotten implements Metrics.
func (s *Stats) TargetForgotten(t Target) {
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
