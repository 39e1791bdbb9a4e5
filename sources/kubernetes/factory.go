package kubernetes

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/disco-lb/disco/core"
)

// Config is the source's config in a host's file (disco's agent), type
// "kubernetes". Every field is optional.
type Config struct {
	// Kubeconfig is the kubeconfig file; empty: in a pod, its service
	// account; outside, $KUBECONFIG or ~/.kube/config.
	Kubeconfig string `yaml:"kubeconfig"`
	// Namespace is the namespace of targets that name none (default: the
	// pod's, or the kubeconfig context's, else "default").
	Namespace string `yaml:"namespace"`
	// LabelSelector restricts the EndpointSlices read (WithLabelSelector).
	LabelSelector string `yaml:"label_selector"`
	// ServiceLookup: whether a Service that does not exist makes its
	// targets not found (default true; WithServiceLookup).
	ServiceLookup *bool `yaml:"service_lookup"`
	// ServiceRecheck: how often the Service is looked up again when it
	// may only be read with get (default 10s; WithServiceRecheck).
	ServiceRecheck time.Duration `yaml:"service_recheck"`
	// QPS and Burst throttle the source's requests to the API server
	// (default: no client-side throttling; the API server's priority and
	// fairness paces it).
	QPS   float32 `yaml:"qps"`
	Burst int     `yaml:"burst"`
}

// Factory returns the source's factory (core.SourceFactory), for hosts
// that build their components from a config file.
func Factory() core.SourceFactory { return factory{} }

type factory struct{}

func (factory) Type() string   { return "kubernetes" }
func (factory) NewConfig() any { return &Config{} }

// options turns a config into options, each checked and named by its key.
func (factory) options(cfg any) (*Config, []Option, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, nil, fmt.Errorf("kubernetes: config of type %T, want *kubernetes.Config: %w", cfg, core.ErrInvalid)
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
	if c.Namespace != "" {
		add("namespace", WithNamespace(c.Namespace))
	}
	if c.LabelSelector != "" {
		add("label_selector", WithLabelSelector(c.LabelSelector))
	}
	if c.ServiceLookup != nil {
		add("service_lookup", WithServiceLookup(*c.ServiceLookup))
	}
	if c.ServiceRecheck != 0 {
		add("service_recheck", WithServiceRecheck(c.ServiceRecheck))
	}
	if c.QPS < 0 || c.Burst < 0 || (c.Burst > 0 && c.QPS == 0) {
		errs = append(errs, fmt.Errorf("qps, burst: %v, %d: want qps > 0 with burst >= 1, or neither", c.QPS, c.Burst))
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
	c, _, err := f.options(cfg)
	if err != nil {
		return core.Target{}, err
	}
	t, err := ParseTarget(text)
	if err != nil {
		return t, err
	}
	if t.Namespace == "" {
		t.Namespace = c.Namespace // the pod's or kubeconfig's when empty, known only when the source is made
	}
	if err := validateTarget(t); err != nil {
		return t, fmt.Errorf("kubernetes: target %q: %v: %w", text, err, core.ErrInvalid)
	}
	return t, nil
}

func (f factory) NewSource(env core.Env, cfg any) (core.Source, error) {
	c, opts, err := f.options(cfg)
	if err != nil {
		return nil, err
	}
	rc, ns, err := LoadConfig(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	if c.QPS > 0 {
		rc.QPS, rc.Burst = c.QPS, max(c.Burst, 1)
	}
	opts = append([]Option{WithNamespace(ns), WithLogger(env.Log)}, opts...) // the config's namespace wins
	if reg, ok := env.Registerer.(prometheus.Registerer); ok && reg != nil {
		opts = append(opts, WithRegisterer(reg))
	}
	return New(rc, opts...)
}
