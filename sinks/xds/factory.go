package xds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/disco-lb/disco/core"
)

// Config is the sink's config in a host's file (disco's agent), type
// "xds". Every field is optional.
type Config struct {
	// Listen is the address to serve xDS on (default ":18000").
	Listen string `yaml:"listen"`
	// TLS: the server's certificate and key (PEM) for TLS; with ClientCA
	// too, clients must present a certificate it signed (mTLS).
	TLS struct {
		Cert     string `yaml:"cert"`
		Key      string `yaml:"key"`
		ClientCA string `yaml:"client_ca"`
	} `yaml:"tls"`
	// MaxResourcesPerStream bounds one stream's subscriptions per type
	// (WithMaxResourcesPerStream; default 1,000).
	MaxResourcesPerStream int `yaml:"max_resources_per_stream"`
	// Subsets turns on server-side subsetting (WithSubsetSize) for the
	// clients that name themselves (a bootstrap with a client id): Size
	// endpoints each, or the size Targets gives a target (keys in the
	// source's syntax, "greeter.demo:grpc"); 0 is all of them.
	Subsets struct {
		Size    int            `yaml:"size"`
		Targets map[string]int `yaml:"targets"`
	} `yaml:"subsets"`
}

// maxSubset bounds a configured subset size.
const maxSubset = 100_000

// Factory returns the sink's factory (core.SinkFactory): an xDS server,
// demand-driven, with the gRPC health service on its port.
func Factory() core.SinkFactory { return factory{} }

type factory struct{}

func (factory) Type() string       { return "xds" }
func (factory) NewConfig() any     { return &Config{Listen: ":18000"} }
func (factory) DemandDriven() bool { return true }

func (factory) check(cfg any) (*Config, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("xds: config of type %T, want *xds.Config: %w", cfg, core.ErrInvalid)
	}
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %q: want host:port (\":18000\")", c.Listen))
	}
	t := c.TLS
	if (t.Cert == "") != (t.Key == "") {
		errs = append(errs, errors.New("tls: cert and key go together"))
	}
	if t.ClientCA != "" && t.Cert == "" {
		errs = append(errs, errors.New("tls: client_ca needs cert and key"))
	}
	if n := c.MaxResourcesPerStream; n != 0 {
		if err := WithMaxResourcesPerStream(n)(&config{}); err != nil {
			errs = append(errs, fmt.Errorf("max_resources_per_stream: %v", err))
		}
	}
	if n := c.Subsets.Size; n < 0 || n > maxSubset {
		errs = append(errs, fmt.Errorf("subsets: size: %d: want 0 (all endpoints) to %d", n, maxSubset))
	}
	for t, n := range c.Subsets.Targets {
		if n < 0 || n > maxSubset {
			errs = append(errs, fmt.Errorf("subsets: targets: %s: %d: want 0 (all endpoints) to %d", t, n, maxSubset))
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", errors.Join(errs...), core.ErrInvalid)
	}
	return c, nil
}

func (f factory) Validate(cfg any) error {
	c, err := f.check(cfg)
	if err != nil {
		return err
	}
	_, err = serverCredentials(c)
	return err
}

// serverCredentials loads the TLS files: none, TLS, or mTLS.
func serverCredentials(c *Config) (credentials.TransportCredentials, error) {
	t := c.TLS
	if t.Cert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %v: %w", err, core.ErrInvalid)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca: %v: %w", err, core.ErrInvalid)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca %s: no PEM certificate in it: %w", t.ClientCA, core.ErrInvalid)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

func (f factory) NewSink(env core.Env, cfg any) (core.AttachableSink, error) {
	c, err := f.check(cfg)
	if err != nil {
		return nil, err
	}
	creds, err := serverCredentials(c)
	if err != nil {
		return nil, err
	}
	return &attached{env: env, cfg: *c, creds: creds}, nil
}

// attached serves one hub at a time over xDS, on the configured port, with
// the gRPC health service.
type attached struct {
	env   core.Env
	cfg   Config
	creds credentials.TransportCredentials

	mu      sync.Mutex
	serving *serving
}

type serving struct {
	a    *attached
	srv  *Server
	gs   *grpc.Server
	done chan struct{}
	once sync.Once
}

func (a *attached) Attach(hub *core.Hub, targets ...core.Target) (io.Closer, error) {
	if len(targets) > 0 {
		return nil, fmt.Errorf("xds %s: serves what its clients ask for; attach it with no target: %w", a.env.Name, core.ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.serving != nil {
		return nil, fmt.Errorf("xds %s: already serves a source (one source per xDS server): %w", a.env.Name, core.ErrInvalid)
	}
	opts := []Option{WithLogger(a.env.Log)}
	if reg, ok := a.env.Registerer.(prometheus.Registerer); ok && reg != nil {
		opts = append(opts, WithRegisterer(reg))
	}
	if a.cfg.MaxResourcesPerStream != 0 {
		opts = append(opts, WithMaxResourcesPerStream(a.cfg.MaxResourcesPerStream))
	}
	if sub := a.cfg.Subsets; sub.Size > 0 || len(sub.Targets) > 0 {
		parse, sizes := defaultParser(hub), map[core.Target]int{}
		for text, n := range sub.Targets {
			t, err := parse(text)
			if err != nil {
				return nil, fmt.Errorf("xds %s: subsets: targets: %q: %w", a.env.Name, text, err)
			}
			sizes[t] = n
		}
		opts = append(opts, WithSubsetSize(func(t core.Target) int {
			if n, ok := sizes[t]; ok {
				return n
			}
			return sub.Size
		}))
	}
	srv, err := New(hub, opts...)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("xds %s: listen: %w", a.env.Name, err)
	}
	gopts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	}
	if a.creds != nil {
		gopts = append(gopts, grpc.Creds(a.creds))
	}
	gs := grpc.NewServer(gopts...)
	srv.Register(gs)
	hs := health.NewServer() // SERVING for "" and every service
	healthpb.RegisterHealthServer(gs, hs)
	s := &serving{a: a, srv: srv, gs: gs, done: make(chan struct{})}
	go func() { defer close(s.done); _ = gs.Serve(lis) }()
	a.env.Log.Info("xds: serving", zap.String("address", lis.Addr().String()), zap.Bool("tls", a.creds != nil))
	a.serving = s
	return s, nil
}

// Close stops serving: streams end (clients keep their last endpoints until
// they reach a server again), the hub is released.
func (s *serving) Close() error {
	s.once.Do(func() {
		s.gs.Stop()
		<-s.done
		s.srv.Close()
		s.a.mu.Lock()
		if s.a.serving == s {
			s.a.serving = nil
		}
		s.a.mu.Unlock()
	})
	return nil
}

func (a *attached) Close() error {
	a.mu.Lock()
	s := a.serving
	a.mu.Unlock()
	if s != nil {
		s.Close()
	}
	return nil
}
