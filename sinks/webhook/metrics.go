package webhook

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a sender's Prometheus series, labelled with the receiver's
// name. Without a registerer they are kept but exported nowhere.
type metrics struct {
	deliveries *prometheus.CounterVec
	failures   *prometheus.CounterVec
	retries    prometheus.Counter
	latency    prometheus.Histogram
	bytes      prometheus.Counter
	oldest     prometheus.GaugeFunc
	reg        prometheus.Registerer // where they are registered; nil: nowhere
}

func newMetrics(reg prometheus.Registerer, name string, oldest func() time.Duration) (*metrics, error) {
	labels := prometheus.Labels{"receiver": name}
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "disco", Subsystem: "webhook", Name: "deliveries_total", ConstLabels: labels,
			Help: "Delivery attempts by result: ok, failed (retried), resync (the receiver asked for the full state), gone (410).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "disco", Subsystem: "webhook", Name: "failures_total", ConstLabels: labels,
			Help: "Failed delivery attempts by reason: network, tls (the receiver's certificate is not trusted, or the handshake failed), timeout, redirect, http_429, http_503, http_4xx, http_5xx, resync, gone.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "disco", Subsystem: "webhook", Name: "retries_total", ConstLabels: labels,
			Help: "Delivery attempts made after a failed one of the same target.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "disco", Subsystem: "webhook", Name: "request_seconds", ConstLabels: labels,
			Help:    "From sending a delivery to reading its response, for deliveries that got one.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "disco", Subsystem: "webhook", Name: "delivered_bytes_total", ConstLabels: labels,
			Help: "Payload bytes of accepted deliveries.",
		}),
		oldest: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "disco", Subsystem: "webhook", Name: "oldest_undelivered_seconds", ConstLabels: labels,
			Help: "How long the oldest state not yet accepted by the receiver has been waiting (from its first delivery attempt); 0 when all are delivered.",
		}, func() float64 { return oldest().Seconds() }),
	}
	if reg == nil {
		return m, nil
	}
	m.reg = reg
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			m.unregister() // never leave part of a sender's series behind
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("webhook: metrics of a receiver with this name are registered already: give each sender its own WithName, or Close the sender it replaces first")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.deliveries, m.failures, m.retries, m.latency, m.bytes, m.oldest}
}

// unregister removes the sender's series from the registry (a sender
// re-created with the same name, on a reload, registers them again).
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
