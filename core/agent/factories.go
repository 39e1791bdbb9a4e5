package agent

import (
	"slices"

	"github.com/disco-lb/disco/core"
)

// Factories are the types of sources and sinks a distribution includes:
// its main lists them (nothing registers itself), so a distribution pulls
// in only the modules it names.
type Factories struct {
	Sources []core.SourceFactory
	Sinks   []core.SinkFactory
}

func (f Factories) source(typ string) (core.SourceFactory, bool) {
	for _, s := range f.Sources {
		if s.Type() == typ {
			return s, true
		}
	}
	return nil, false
}

func (f Factories) sink(typ string) (core.SinkFactory, bool) {
	for _, s := range f.Sinks {
		if s.Type() == typ {
			return s, true
		}
	}
	return nil, false
}

func (f Factories) sourceTypes() []string {
	var out []string
	for _, s := range f.Sources {
		out = append(out, s.Type())
	}
	slices.Sort(out)
	return out
}

func (f Factories) sinkTypes() []string {
	var out []string
	for _, s := range f.Sinks {
		out = append(out, s.Type())
	}
	slices.Sort(out)
	return out
}
