package core

import (
	"io"

	"go.uber.org/zap"
)

// A factory makes sources or sinks of one type from a config: what a host
// that reads its components from a file (disco's agent) is given, one per
// type it includes, so that a distribution holds only the modules it
// lists. Factories are passed to the host; nothing registers itself.
//
// A config is a pointer to a struct of the module's with yaml tags, made
// by NewConfig with its defaults; the host fills it from the file (the
// struct's fields are the keys the file may use for that type) and calls
// Validate on it before it builds anything, so that a whole file is checked
// before anything changes.

// Env is what a factory gets from its host besides a config.
type Env struct {
	// Name is the component's name in the host's config ("k8s", "hooks").
	Name string
	// Log is the component's logger (never nil).
	Log *zap.Logger
	// Registerer, when not nil, is a prometheus.Registerer for the
	// component's metrics (core does not depend on Prometheus: modules
	// with metrics type-assert it).
	Registerer any
}

// SourceFactory makes sources of one type.
type SourceFactory interface {
	// Type is the type's name in a config ("kubernetes", "dns", "file").
	Type() string
	// NewConfig returns a new config holding the defaults.
	NewConfig() any
	// Validate checks a config; its error names the key that is wrong and
	// wraps ErrInvalid.
	Validate(cfg any) error
	// Target reads a target in the syntax of a source of this config
	// (without making the source), so that a host can check the targets of
	// a file before it starts anything.
	Target(cfg any, text string) (Target, error)
	// NewSource makes a source of a validated config. If the source holds
	// resources (a process, connections) it also implements io.Closer.
	NewSource(env Env, cfg any) (Source, error)
}

// SinkFactory makes sinks of one type.
type SinkFactory interface {
	// Type is the type's name in a config ("webhook", "xds", "plugin").
	Type() string
	// NewConfig returns a new config holding the defaults.
	NewConfig() any
	// Validate checks a config; its error names the key that is wrong and
	// wraps ErrInvalid.
	Validate(cfg any) error
	// DemandDriven tells whether the sink chooses its targets itself (an
	// xDS server serves what its clients ask for): it is attached to a hub
	// with no target. Otherwise it is attached once per target.
	DemandDriven() bool
	// NewSink makes a sink of a validated config.
	NewSink(env Env, cfg any) (AttachableSink, error)
}

// AttachableSink is a sink a host feeds from hubs. Attach starts feeding it
// target of hub (or, with no target, for a demand-driven sink, whatever its
// clients ask of hub) until the returned io.Closer is closed; attachments
// are independent, so a host adds or removes a target without touching the
// others. Close ends the sink and every attachment.
type AttachableSink interface {
	Attach(hub *Hub, target ...Target) (io.Closer, error)
	Close() error
}
