package core

// Metrics receives core's counters and gauges. Implement it to export them
// (a Prometheus adapter, say) without core depending on a metrics library;
// coretest.Stats keeps them in memory.
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
