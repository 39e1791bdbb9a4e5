package core

import (
	"time"

	"github.com/disco-lb/disco/core/kit"
)

// Option configures a Hub. A value out of range makes NewHub fail with an
// error naming the option and what it allows.
type Option = kit.Option[*config]

type config struct {
	kit.Common // WithLogger, WithBackoff
	metrics    Metrics
	maxStale   time.Duration
	linger     time.Duration
}

func newConfig(opts []Option) (config, error) {
	c := config{Common: kit.Common{Log: nopLogger, Backoff: kit.DefaultBackoff}, metrics: nopMetrics{}}
	err := kit.Apply(&c, opts...)
	return c, err
}

// WithLogger sets the logger for lifecycle events and errors (nil: none).
// Per-endpoint events are counted (see Metrics), not logged.
var WithLogger = kit.WithLogger[*config]

// WithBackoff sets the jittered exponential backoff (0 < min <= max <=
// 24h; default 100ms to 30s) between the retries of a failing sink and the
// restarts of a source's Watch.
func WithBackoff(min, max time.Duration) Option {
	return kit.WithBackoff[*config]("WithBackoff", min, max)
}

// WithMetrics sets where counters and gauges go (nil: nowhere).
func WithMetrics(m Metrics) Option {
	return func(c *config) error {
		if m == nil {
			m = nopMetrics{}
		}
		c.metrics = m
		return nil
	}
}

// WithMaxStaleness bounds how long the last good endpoints of a stale target
// stay in force (0, the default, to 1 year; 0 keeps them for ever): after d
// they are dropped (an empty state, still stale, Staleness.Dropped set).
func WithMaxStaleness(d time.Duration) Option {
	return kit.Checked(kit.NonNegative("WithMaxStaleness", d, 365*24*time.Hour), func(c *config) { c.maxStale = d })
}

// WithLinger keeps a target's watch running for d (0, the default, to 1h)
// after its last subscriber left, so that a client that closes and reopens
// connections to the same target does not cost its backend a new watch
// each time (for Kubernetes, a LIST and a WATCH).
func WithLinger(d time.Duration) Option {
	return kit.Checked(kit.NonNegative("WithLinger", d, time.Hour), func(c *config) { c.linger = d })
}
