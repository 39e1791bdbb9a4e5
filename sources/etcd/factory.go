package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/disco-lb/disco/core"
)

// Config is the source's config in a host's file (disco's agent), type
// "etcd". Endpoints is required. Give the password through the
// environment (${ETCD_PASSWORD} in disco's agent).
type Config struct {
	// Endpoints are etcd's client URLs or addresses ("10.0.0.1:2379",
	// "https://etcd-0:2379"); several for a cluster.
	Endpoints []string `yaml:"endpoints"`
	// Format is how values are read: auto (the default), etcd, plain or
	// kratos; Scheme, a kratos endpoint's scheme (default grpc).
	Format string `yaml:"format"`
	Scheme string `yaml:"scheme"`
	// Username and Password: etcd's authentication.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TLS: the CA (PEM) etcd's certificate chains to; Cert and Key (PEM)
	// for client certificate authentication.
	TLS struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	// UnreachableAfter: how long etcd may be unreachable before the
	// targets go stale (default 2s); DialTimeout bounds the first
	// connection (5s).
	UnreachableAfter time.Duration `yaml:"unreachable_after"`
	DialTimeout      time.Duration `yaml:"dial_timeout"`
}

// Factory returns the source's factory (core.SourceFactory), for hosts
// that build their components from a config file.
func Factory() core.SourceFactory { return factory{} }

type factory struct{}

func (factory) Type() string   { return "etcd" }
func (factory) NewConfig() any { return &Config{} }

func (factory) options(cfg any, load bool) (*Config, []Option, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, nil, fmt.Errorf("etcd: config of type %T, want *etcd.Config: %w", cfg, core.ErrInvalid)
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
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("endpoints: at least one (\"10.0.0.1:2379\")"))
	}
	if c.Format != "" {
		if f, err := ParseFormat(c.Format); err != nil {
			errs = append(errs, fmt.Errorf("format: %v", err))
		} else {
			add("format", WithFormat(f))
		}
	}
	if c.Scheme != "" {
		add("scheme", WithScheme(c.Scheme))
	}
	if (c.Username == "") != (c.Password == "") {
		errs = append(errs, errors.New("username, password: both or neither"))
	} else if c.Username != "" {
		add("username", WithAuth(c.Username, c.Password))
	}
	if c.UnreachableAfter != 0 {
		add("unreachable_after", WithUnreachableAfter(c.UnreachableAfter))
	}
	if c.DialTimeout != 0 {
		add("dial_timeout", WithDialTimeout(c.DialTimeout))
	}
	if t := c.TLS; t.CA != "" || t.Cert != "" || t.Key != "" {
		if (t.Cert == "") != (t.Key == "") {
			errs = append(errs, errors.New("tls: cert and key go together"))
		} else if load {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if t.CA != "" {
				pem, err := os.ReadFile(t.CA)
				pool := x509.NewCertPool()
				if err != nil || !pool.AppendCertsFromPEM(pem) {
					errs = append(errs, fmt.Errorf("tls: ca %s: no PEM certificate (%v)", t.CA, err))
				}
				cfg.RootCAs = pool
			}
			if t.Cert != "" {
				pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
				if err != nil {
					errs = append(errs, fmt.Errorf("tls: %v", err))
				}
				cfg.Certificates = []tls.Certificate{pair}
			}
			add("tls", WithTLS(cfg))
		}
	}
	if len(errs) > 0 {
		return c, nil, fmt.Errorf("%w: %w", errors.Join(errs...), core.ErrInvalid)
	}
	return c, opts, nil
}

func (f factory) Validate(cfg any) error {
	_, _, err := f.options(cfg, true)
	return err
}

func (f factory) Target(cfg any, text string) (core.Target, error) {
	if _, _, err := f.options(cfg, false); err != nil {
		return core.Target{}, err
	}
	return ParseTarget(text)
}

func (f factory) NewSource(env core.Env, cfg any) (core.Source, error) {
	c, opts, err := f.options(cfg, true)
	if err != nil {
		return nil, err
	}
	return New(c.Endpoints, append(opts, WithLogger(env.Log))...)
}
