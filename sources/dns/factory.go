package dns

import (
	"errors"
	"fmt"
	"time"

	"github.com/disco-lb/disco/core"
)

// Config is the source's config in a host's file (disco's agent), type
// "dns". Every field is optional.
type Config struct {
	// Servers are the DNS servers to ask ("10.96.0.10:53"; default: the
	// nameservers of ResolvConf).
	Servers []string `yaml:"servers"`
	// ResolvConf lists the servers when Servers is empty (default
	// /etc/resolv.conf).
	ResolvConf string `yaml:"resolv_conf"`
	// Mode is "auto" (SRV for names that start with "_", else A/AAAA; the
	// default), "srv" or "host".
	Mode string `yaml:"mode"`
	// TTLFloor and TTLCeiling bound the time between two queries of a name
	// (defaults 1s and 5m).
	TTLFloor   time.Duration `yaml:"ttl_floor"`
	TTLCeiling time.Duration `yaml:"ttl_ceiling"`
	// Timeout bounds each query (default 2s).
	Timeout time.Duration `yaml:"timeout"`
	// Concurrency bounds the address queries of one SRV answer in flight
	// (default 16).
	Concurrency int `yaml:"concurrency"`
}

// Factory returns the source's factory (core.SourceFactory), for hosts
// that build their components from a config file.
func Factory() core.SourceFactory { return factory{} }

type factory struct{}

func (factory) Type() string   { return "dns" }
func (factory) NewConfig() any { return &Config{} }

func (factory) options(cfg any) ([]Option, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("dns: config of type %T, want *dns.Config: %w", cfg, core.ErrInvalid)
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
	if len(c.Servers) > 0 {
		add("servers", WithServer(c.Servers...))
	}
	if c.ResolvConf != "" {
		add("resolv_conf", WithResolvConf(c.ResolvConf))
	}
	switch c.Mode {
	case "", "auto":
	case "srv":
		add("mode", WithMode(SRV))
	case "host":
		add("mode", WithMode(Host))
	default:
		errs = append(errs, fmt.Errorf("mode: %q: want auto, srv or host", c.Mode))
	}
	if c.TTLFloor != 0 || c.TTLCeiling != 0 {
		floor, ceiling := c.TTLFloor, c.TTLCeiling
		if floor == 0 {
			floor = time.Second
		}
		if ceiling == 0 {
			ceiling = 5 * time.Minute
		}
		add("ttl_floor, ttl_ceiling", WithTTLBounds(floor, ceiling))
	}
	if c.Timeout != 0 {
		add("timeout", WithTimeout(c.Timeout))
	}
	if c.Concurrency != 0 {
		add("concurrency", WithConcurrency(c.Concurrency))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", errors.Join(errs...), core.ErrInvalid)
	}
	return opts, nil
}

func (f factory) Validate(cfg any) error {
	_, err := f.options(cfg)
	return err
}

func (f factory) Target(cfg any, text string) (core.Target, error) {
	opts, err := f.options(cfg)
	if err != nil {
		return core.Target{}, err
	}
	o := options{}
	for _, opt := range opts {
		_ = opt(&o)
	}
	t, err := core.ParseTarget(text, core.HostSyntax)
	if err != nil {
		return t, err
	}
	return t, (&Source{opts: o}).check(t)
}

func (f factory) NewSource(env core.Env, cfg any) (core.Source, error) {
	opts, err := f.options(cfg)
	if err != nil {
		return nil, err
	}
	return New(append(opts, WithLogger(env.Log))...)
}
