package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/disco-lb/disco/core"
)

// tracker is a hub's core.Metrics: what the status page shows of each
// target's sinks (when each last got a state, how far behind it is) and
// the agent's per-target series.
type tracker struct {
	source string
	m      *agentMetrics

	mu        sync.Mutex
	published map[core.Target]time.Time            // the newest state's time
	delivered map[core.Target]map[string]time.Time // per subscription, its last accepted update
	errors    map[core.Target]map[string]int       // per subscription, errors returned
}

func newTracker(source string, m *agentMetrics) *tracker {
	return &tracker{source: source, m: m, published: map[core.Target]time.Time{},
		delivered: map[core.Target]map[string]time.Time{}, errors: map[core.Target]map[string]int{}}
}

func (t *tracker) StatePublished(target core.Target, _ uint64, s core.State) {
	t.mu.Lock()
	t.published[target] = time.Now()
	t.mu.Unlock()
	labels := prometheus.Labels{"source": t.source, "target": target.String()}
	t.m.endpoints.With(labels).Set(float64(s.Endpoints.Len()))
	stale := 0.0
	if s.Stale.IsStale() {
		stale = 1
	}
	t.m.stale.With(labels).Set(stale)
	t.m.updates.WithLabelValues(t.source).Inc()
}

func (t *tracker) UpdateDelivered(sink string, target core.Target) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.delivered[target] == nil {
		t.delivered[target] = map[string]time.Time{}
	}
	t.delivered[target][sink] = time.Now()
}

func (t *tracker) UpdateCoalesced(string, core.Target) {}

func (t *tracker) SinkError(sink string, target core.Target, _ bool) {
	t.mu.Lock()
	if t.errors[target] == nil {
		t.errors[target] = map[string]int{}
	}
	t.errors[target][sink]++
	t.mu.Unlock()
	t.m.sinkErrors.WithLabelValues(t.source).Inc()
}

func (t *tracker) SinkResync(string, core.Target) {}

func (t *tracker) TargetForgotten(target core.Target) {
	t.mu.Lock()
	delete(t.published, target)
	delete(t.delivered, target)
	delete(t.errors, target)
	t.mu.Unlock()
	labels := prometheus.Labels{"source": t.source, "target": target.String()}
	t.m.endpoints.Delete(labels)
	t.m.stale.Delete(labels)
}

// sinkStatus is one subscription's delivery of a target.
type sinkStatus struct {
	Name string  `json:"name"`
	Lag  float64 `json:"lag_seconds"` // since the newest state it has not taken; 0: it has it
	Errs int     `json:"errors"`
}

func (t *tracker) sinks(target core.Target) []sinkStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	pub := t.published[target]
	var out []sinkStatus
	for name, at := range t.delivered[target] {
		lag := 0.0
		if at.Before(pub) {
			lag = time.Since(pub).Seconds()
		}
		out = append(out, sinkStatus{Name: name, Lag: lag, Errs: t.errors[target][name]})
	}
	for name, n := range t.errors[target] {
		if _, ok := t.delivered[target][name]; !ok {
			out = append(out, sinkStatus{Name: name, Lag: time.Since(pub).Seconds(), Errs: n})
		}
	}
	return out
}

// agentMetrics are the agent's own series.
type agentMetrics struct {
	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge
	reloadOK   prometheus.Gauge
	endpoints  *prometheus.GaugeVec
	stale      *prometheus.GaugeVec
	updates    *prometheus.CounterVec
	sinkErrors *prometheus.CounterVec
	components *prometheus.GaugeVec
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "disco", Subsystem: "agent", Name: "config_reloads_total",
			Help: "Reloads of the configuration, by result (success, failure: the file was invalid, nothing changed)."}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "agent", Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully."}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "agent", Name: "config_last_reload_successful",
			Help: "Whether the last reload succeeded (1) or the file was invalid (0)."}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "agent", Name: "target_endpoints",
			Help: "Endpoints of each watched target."}, []string{"source", "target"}),
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "agent", Name: "target_stale",
			Help: "Whether a watched target is stale (its source cannot reach its backend, or it is not found)."}, []string{"source", "target"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "disco", Subsystem: "agent", Name: "states_total",
			Help: "New states published, by source."}, []string{"source"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "disco", Subsystem: "agent", Name: "sink_errors_total",
			Help: "Errors sinks returned, by source."}, []string{"source"}),
		components: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "agent", Name: "components",
			Help: "Sources and sinks running, by kind."}, []string{"kind"}),
	}
	reg.MustRegister(m.reloads, m.lastReload, m.reloadOK, m.endpoints, m.stale, m.updates, m.sinkErrors, m.components)
	return m
}
