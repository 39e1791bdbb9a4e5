package xds

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series (nowhere without a
// registerer).
type metrics struct {
	reg           prometheus.Registerer
	streams       prometheus.Gauge
	subscriptions *prometheus.GaugeVec
	pushes        *prometheus.CounterVec
	replies       *prometheus.CounterVec
	pushSeconds   prometheus.Histogram
	invalid       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "xds", Name: "streams",
			Help: "xDS streams open (ADS, state of the world and delta): the clients connected."}),
		subscriptions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "xds", Name: "subscriptions",
			Help: "Resources subscribed to, summed over streams, by type (listener, route, cluster, endpoints)."}, []string{"type"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "disco", Subsystem: "xds", Name: "pushes_total",
			Help: "Responses sent to clients, by type."}, []string{"type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "disco", Subsystem: "xds", Name: "replies_total",
			Help: "Clients' replies to a response, by type and result: ack, or nack (the client rejected it: never expected)."}, []string{"type", "result"}),
		pushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "disco", Subsystem: "xds", Name: "push_seconds",
			Help:    "From a new state of a target to its ClusterLoadAssignment handed to a client's stream.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "disco", Subsystem: "xds", Name: "invalid_resources_total",
			Help: "Resources built that failed validation and were not sent (never expected)."}),
	}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("xds: the server's metrics are registered already: close the server it replaces first")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.streams, m.subscriptions, m.pushes, m.replies, m.pushSeconds, m.invalid}
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
