package kubernetes

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// metrics are the source's Prometheus series. Without a registerer they are
// kept but exported nowhere.
type metrics struct {
	endpoints  *prometheus.GaugeVec
	events     *prometheus.CounterVec
	errors     *prometheus.CounterVec
	staleSince *prometheus.GaugeVec
	latency    *prometheus.HistogramVec
	dropped    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "disco", Subsystem: "kubernetes", Name: "endpoints",
			Help: "Endpoints of a target by condition: all, ready, serving, terminating, routable (what kube-proxy would use).",
		}, []string{"namespace", "service", "port", "condition"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "disco", Subsystem: "kubernetes", Name: "events_total",
			Help: "EndpointSlice events applied, by type: update (add or modify), delete, list (initial list or relist).",
		}, []string{"namespace", "service", "type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "disco", Subsystem: "kubernetes", Name: "errors_total",
			Help: "List or watch failures, by kind: unavailable, forbidden.",
		}, []string{"namespace", "service", "kind"}),
		staleSince: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "disco", Subsystem: "kubernetes", Name: "stale_since_seconds",
			Help: "Unix time since when the service's watch has been failing (its last good state in force); 0 when fresh.",
		}, []string{"namespace", "service"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "disco", Subsystem: "kubernetes", Name: "propagation_seconds",
			Help:    "From a slice's endpoints.kubernetes.io/last-change-trigger-time to the source publishing the change.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"namespace", "service"}),
		dropped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "disco", Subsystem: "kubernetes", Name: "unusable_endpoints",
			Help: "Endpoints of the service's slices left out as unusable (no address, an address of the wrong family); the targets are stale while any is.",
		}, []string{"namespace", "service"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.endpoints, m.events, m.errors, m.staleSince, m.latency, m.dropped} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			// A second source on the same registry shares the series.
			switch existing := are.ExistingCollector.(type) {
			case *prometheus.GaugeVec:
				switch c {
				case m.endpoints:
					m.endpoints = existing
				case m.dropped:
					m.dropped = existing
				default:
					m.staleSince = existing
				}
			case *prometheus.CounterVec:
				if c == m.events {
					m.events = existing
				} else {
					m.errors = existing
				}
			case *prometheus.HistogramVec:
				m.latency = existing
			}
		}
	}
	return m, nil
}

func (m *metrics) event(k serviceKey, typ string) {
	m.events.WithLabelValues(k.namespace, k.name, typ).Inc()
}

func (m *metrics) failure(k serviceKey, kind core.ErrorKind) {
	m.errors.WithLabelValues(k.namespace, k.name, string(kind)).Inc()
	g := m.staleSince.WithLabelValues(k.namespace, k.name)
	if stale := getGauge(g); stale == 0 {
		g.Set(float64(time.Now().UnixNano()) / 1e9)
	}
}

func (m *metrics) published(t core.Target, set core.Set, trigger time.Time) {
	var ready, serving, terminating float64
	for e := range set.All() {
		if e.Conditions.IsReady() {
			ready++
		}
		if e.Conditions.IsServing() {
			serving++
		}
		if e.Conditions.IsTerminating() {
			terminating++
		}
	}
	for cond, v := range map[string]float64{
		"all": float64(set.Len()), "ready": ready, "serving": serving, "terminating": terminating,
		"routable": float64(len(route.Routable(set))),
	} {
		m.endpoints.WithLabelValues(t.Namespace, t.Name, t.Port, cond).Set(v)
	}
	m.staleSince.WithLabelValues(t.Namespace, t.Name).Set(0)
	if !trigger.IsZero() {
		m.latency.WithLabelValues(t.Namespace, t.Name).Observe(time.Since(trigger).Seconds())
	}
}

func (m *metrics) unusable(k serviceKey, n int) {
	m.dropped.WithLabelValues(k.namespace, k.name).Set(float64(n))
}

func (m *metrics) forgetTarget(t core.Target) {
	m.endpoints.DeletePartialMatch(prometheus.Labels{"namespace": t.Namespace, "service": t.Name, "port": t.Port})
}

func (m *metrics) forgetService(k serviceKey) {
	l := prometheus.Labels{"namespace": k.namespace, "service": k.name}
	m.endpoints.DeletePartialMatch(l)
	m.events.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.staleSince.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	m.dropped.DeletePartialMatch(l)
}

// getGauge reads a gauge's value.
func getGauge(g prometheus.Gauge) float64 {
	var pb dto.Metric
	if err := g.Write(&pb); err != nil {
		return 0
	}
	return pb.GetGauge().GetValue()
}
