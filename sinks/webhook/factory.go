package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/wire"
)

// Config is the sink's config in a host's file (disco's agent), type
// "webhook". URL and Secrets are required. Give secrets through the
// environment (${DISCO_WEBHOOK_SECRET} in disco's agent), never in a file
// under version control.
type Config struct {
	// URL is the receiver's.
	URL string `yaml:"url"`
	// Secrets sign every delivery (whsec_…; two during a rotation).
	Secrets []string `yaml:"secrets"`
	// Form is "full" (every delivery the whole state; the default) or
	// "delta".
	Form string `yaml:"form"`
	// Name labels the sender's metrics (default: the URL's host).
	Name string `yaml:"name"`
	// Timeout bounds one delivery (default 10s), ConnectTimeout its
	// connection (5s), MaxRetryAfter a receiver's Retry-After (10m).
	Timeout        time.Duration `yaml:"timeout"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	MaxRetryAfter  time.Duration `yaml:"max_retry_after"`
	// TLS: CA (PEM) the receiver's certificate must chain to (default: the
	// system's); Cert and Key (PEM) for mTLS.
	TLS struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
}

// Factory returns the sink's factory (core.SinkFactory), for hosts that
// build their components from a config file.
func Factory() core.SinkFactory { return factory{} }

type factory struct{}

func (factory) Type() string       { return "webhook" }
func (factory) NewConfig() any     { return &Config{} }
func (factory) DemandDriven() bool { return false }

func (factory) options(cfg any, load bool) (*Config, []Option, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, nil, fmt.Errorf("webhook: config of type %T, want *webhook.Config: %w", cfg, core.ErrInvalid)
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
	if c.URL == "" {
		errs = append(errs, errors.New("url: required"))
	}
	if len(c.Secrets) == 0 {
		errs = append(errs, errors.New("secrets: at least one (whsec_…; from the environment: [${DISCO_WEBHOOK_SECRET}])"))
	}
	for i, text := range c.Secrets {
		if _, err := ParseSecret(text); err != nil {
			errs = append(errs, fmt.Errorf("secrets[%d]: %v", i, err)) // ParseSecret never prints the key
		}
	}
	add("secrets", WithSecrets(c.Secrets...))
	switch c.Form {
	case "", "full":
	case "delta":
		add("form", WithForm(wire.DeltaForm))
	default:
		errs = append(errs, fmt.Errorf("form: %q: want full or delta", c.Form))
	}
	if c.Name != "" {
		add("name", WithName(c.Name))
	}
	if c.Timeout != 0 {
		add("timeout", WithTimeout(c.Timeout))
	}
	if c.ConnectTimeout != 0 {
		add("connect_timeout", WithConnectTimeout(c.ConnectTimeout))
	}
	if c.MaxRetryAfter != 0 {
		add("max_retry_after", WithMaxRetryAfter(c.MaxRetryAfter))
	}
	if t := c.TLS; t.CA != "" || t.Cert != "" || t.Key != "" {
		if (t.Cert == "") != (t.Key == "") {
			errs = append(errs, errors.New("tls: cert and key go together"))
		} else if load {
			cfg, err := tlsConfig(t.CA, t.Cert, t.Key)
			if err != nil {
				errs = append(errs, fmt.Errorf("tls: %v", err))
			} else {
				add("tls", WithTLS(cfg))
			}
		}
	}
	if len(errs) > 0 {
		return c, nil, fmt.Errorf("%w: %w", errors.Join(errs...), core.ErrInvalid)
	}
	return c, opts, nil
}

func tlsConfig(ca, cert, key string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no PEM certificate in it", ca)
		}
		cfg.RootCAs = pool
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func (f factory) Validate(cfg any) error {
	_, _, err := f.options(cfg, true)
	if err == nil {
		c := cfg.(*Config)
		_, err = New(c.URL, WithSecrets(c.Secrets...)) // the URL's checks
	}
	return err
}

func (f factory) NewSink(env core.Env, cfg any) (core.AttachableSink, error) {
	c, opts, err := f.options(cfg, true)
	if err != nil {
		return nil, err
	}
	opts = append(opts, WithLogger(env.Log))
	if c.Name == "" {
		opts = append(opts, WithName(env.Name))
	}
	if reg, ok := env.Registerer.(prometheus.Registerer); ok && reg != nil {
		opts = append(opts, WithRegisterer(reg))
	}
	s, err := New(c.URL, opts...)
	if err != nil {
		return nil, err
	}
	return &attached{s: s}, nil
}

// attached is a sender fed from hubs, one Delivery per Attach.
type attached struct{ s *Sender }

func (a *attached) Attach(hub *core.Hub, targets ...core.Target) (io.Closer, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("webhook %s: attached with no target (a webhook delivers the targets it is given): %w", a.s.Name(), core.ErrInvalid)
	}
	return a.s.Deliver(hub, targets...)
}

// Drain waits for deliveries in flight (see Sender.Drain).
func (a *attached) Drain(ctx context.Context) error { return a.s.Drain(ctx) }

func (a *attached) Close() error { a.s.Close(); return nil }
