package file

import (
	"errors"
	"fmt"
	"time"

	"github.com/disco-lb/disco/core"
)

// Config is the source's config in a host's file (disco's agent), type
// "file". Path is required; the rest is optional.
type Config struct {
	// Path is a file, or a directory whose *.yaml, *.yml and *.json files
	// are read (a mounted ConfigMap works).
	Path string `yaml:"path"`
	// Interval: how often the files are read without a file-system event
	// (WithInterval).
	Interval time.Duration `yaml:"interval"`
	// Settle: how long a file must be quiet before it is read
	// (WithSettle).
	Settle time.Duration `yaml:"settle"`
	// Grace: how long a file may be broken before its targets go stale
	// (WithGrace).
	Grace time.Duration `yaml:"grace"`
	// MaxSize bounds a file's size in bytes (WithMaxSize).
	MaxSize int64 `yaml:"max_size"`
	// DefaultPort is the port of an endpoint written without one
	// (Prometheus file_sd; WithDefaultPort).
	DefaultPort uint16 `yaml:"default_port"`
}

// Factory returns the source's factory (core.SourceFactory), for hosts
// that build their components from a config file.
func Factory() core.SourceFactory { return factory{} }

type factory struct{}

func (factory) Type() string   { return "file" }
func (factory) NewConfig() any { return &Config{} }

func (factory) options(cfg any) (*Config, []Option, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, nil, fmt.Errorf("file: config of type %T, want *file.Config: %w", cfg, core.ErrInvalid)
	}
	var opts []Option
	var errs []error
	add := func(key string, o Option) {
		if err := o(&options{}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", key, err))
			return
		}
		opts = append(opts, o)
	}
	if c.Path == "" {
		errs = append(errs, errors.New("path: required (a file or a directory)"))
	}
	if c.Interval != 0 {
		add("interval", WithInterval(c.Interval))
	}
	if c.Settle != 0 {
		add("settle", WithSettle(c.Settle))
	}
	if c.Grace != 0 {
		add("grace", WithGrace(c.Grace))
	}
	if c.MaxSize != 0 {
		add("max_size", WithMaxSize(c.MaxSize))
	}
	if c.DefaultPort != 0 {
		add("default_port", WithDefaultPort(c.DefaultPort))
	}
	if len(errs) > 0 {
		return c, nil, fmt.Errorf("%w: %w", errors.Join(errs...), core.ErrInvalid)
	}
	return c, opts, nil
}

func (f factory) Validate(cfg any) error {
	_, _, err := f.options(cfg)
	return err
}

func (f factory) Target(cfg any, text string) (core.Target, error) {
	if _, _, err := f.options(cfg); err != nil {
		return core.Target{}, err
	}
	return core.ParseTarget(text, core.HostSyntax)
}

func (f factory) NewSource(env core.Env, cfg any) (core.Source, error) {
	c, opts, err := f.options(cfg)
	if err != nil {
		return nil, err
	}
	return New(c.Path, append(opts, WithLogger(env.Log))...)
}
