package plugin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/disco-lb/disco/core"
)

// Config is a plugin's config in a host's file (disco's agent), type
// "plugin" among the sources or the sinks. Path is required.
type Config struct {
	// Path is the plugin binary (or a script that runs one).
	Path string `yaml:"path"`
	// Args are its arguments (WithArgs).
	Args []string `yaml:"args"`
	// Restart bounds its restarts: the backoff between two, and how many
	// in a row before the host gives up (WithRestart; defaults 100ms, 5s,
	// 5).
	Restart struct {
		Min   time.Duration `yaml:"min"`
		Max   time.Duration `yaml:"max"`
		Count int           `yaml:"max_restarts"`
	} `yaml:"restart"`
	// ProgressTimeout: a Watch or an update stuck for longer restarts the
	// plugin (WithProgressTimeout; 0: the default).
	ProgressTimeout time.Duration `yaml:"progress_timeout"`
	// MaxMessageSize bounds one message across the boundary
	// (WithMaxMessageSize).
	MaxMessageSize int `yaml:"max_message_size"`
}

// SourceFactory returns the factory of plugin sources (core.SourceFactory).
func SourceFactory() core.SourceFactory { return sourceFactory{} }

// SinkFactory returns the factory of plugin sinks (core.SinkFactory).
func SinkFactory() core.SinkFactory { return sinkFactory{} }

func options(cfg any) (*Config, []Option, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, nil, fmt.Errorf("plugin: config of type %T, want *plugin.Config: %w", cfg, core.ErrInvalid)
	}
	var opts []Option
	var errs []error
	add := func(key string, o Option) {
		if err := o(&config{}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", key, err))
			return
		}
		opts = append(opts, o)
	}
	if c.Path == "" {
		errs = append(errs, errors.New("path: required (the plugin binary)"))
	}
	if len(c.Args) > 0 {
		add("args", WithArgs(c.Args...))
	}
	if r := c.Restart; r.Min != 0 || r.Max != 0 || r.Count != 0 {
		min, max, n := r.Min, r.Max, r.Count
		if min == 0 {
			min = 100 * time.Millisecond
		}
		if max == 0 {
			max = 5 * time.Second
		}
		if n == 0 {
			n = 5
		}
		add("restart", WithRestart(min, max, n))
	}
	if c.ProgressTimeout != 0 {
		add("progress_timeout", WithProgressTimeout(c.ProgressTimeout))
	}
	if c.MaxMessageSize != 0 {
		add("max_message_size", WithMaxMessageSize(c.MaxMessageSize))
	}
	if len(errs) > 0 {
		return c, nil, fmt.Errorf("%w: %w", errors.Join(errs...), core.ErrInvalid)
	}
	return c, opts, nil
}

// checkBinary says, before anything starts, that a plugin binary is not
// there or cannot run.
func checkBinary(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("path: plugin binary %s: %v: %w", path, err, core.ErrInvalid)
	case fi.IsDir():
		return fmt.Errorf("path: plugin binary %s: is a directory: %w", path, core.ErrInvalid)
	case fi.Mode()&0o111 == 0:
		return fmt.Errorf("path: plugin binary %s: not executable: %w", path, core.ErrInvalid)
	}
	return nil
}

func validate(cfg any) error {
	c, _, err := options(cfg)
	if err != nil {
		return err
	}
	return checkBinary(c.Path)
}

type sourceFactory struct{}

func (sourceFactory) Type() string           { return "plugin" }
func (sourceFactory) NewConfig() any         { return &Config{} }
func (sourceFactory) Validate(cfg any) error { return validate(cfg) }
func (sourceFactory) Target(cfg any, text string) (core.Target, error) {
	return core.ParseTarget(text, core.HostSyntax)
}

func (sourceFactory) NewSource(env core.Env, cfg any) (core.Source, error) {
	c, opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	return NewSource(c.Path, append(opts, WithLogger(env.Log))...)
}

type sinkFactory struct{}

func (sinkFactory) Type() string           { return "plugin" }
func (sinkFactory) NewConfig() any         { return &Config{} }
func (sinkFactory) Validate(cfg any) error { return validate(cfg) }
func (sinkFactory) DemandDriven() bool     { return false }

func (sinkFactory) NewSink(env core.Env, cfg any) (core.AttachableSink, error) {
	c, opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	s, err := NewSink(c.Path, append(opts, WithLogger(env.Log))...)
	if err != nil {
		return nil, err
	}
	return &attached{sink: s, name: env.Name}, nil
}

// attached feeds a sink plugin from hubs: one subscription per target.
type attached struct {
	sink *Sink
	name string
}

func (a *attached) Attach(hub *core.Hub, targets ...core.Target) (io.Closer, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("plugin sink %s: attached with no target (a sink plugin is fed the targets it is given): %w", a.name, core.ErrInvalid)
	}
	return hub.Subscribe(a.name, a.sink, targets...)
}

func (a *attached) Close() error { return a.sink.Close() }
