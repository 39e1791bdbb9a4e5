// Command xds-server serves disco's Kubernetes discovery over xDS: any gRPC
// client with xDS support (Go, Java, C++, Python, Node) dialing
// xds:///<service>.<namespace>:<port> with a bootstrap that names this
// server is balanced across the Service's ready pods, and follows them, with
// no disco code in it. One server watches the API server for every client.
//
//	xds-server [-listen :18000] [-kubeconfig FILE] [-metrics :9102]
//	           [-tls-cert FILE -tls-key FILE [-client-ca FILE]]
//	xds-server bootstrap -server HOST:PORT [-zone ZONE] [-node ID]
//	           [-ca FILE [-cert FILE -key FILE]]
//
// The first form serves; in a cluster it uses its service account (which
// needs list and watch on endpointslices and get on services, in the
// namespaces its clients name), outside the kubeconfig. With -tls-cert and
// -tls-key the xDS channel is TLS; with -client-ca too, clients must
// present a certificate signed by that CA (mTLS). Prometheus metrics are on
// -metrics at /metrics (disco_xds_*, the Kubernetes source's, Go's). SIGTERM or SIGINT stops
// it; clients keep their last endpoints until they reach a server again.
//
// The second form prints the bootstrap a client needs (GRPC_XDS_BOOTSTRAP
// names its file): this server's address as the client dials it, the
// client's zone for zone preference, its node id, and its TLS files.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/xds"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bootstrap" {
		if err := bootstrap(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "xds-server bootstrap:", err)
			os.Exit(2)
		}
		return
	}
	listen := flag.String("listen", ":18000", "address to serve xDS on")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (default: in-cluster, $KUBECONFIG or ~/.kube/config)")
	metrics := flag.String("metrics", ":9102", "address to serve Prometheus metrics on (empty: none)")
	cert := flag.String("tls-cert", "", "the server's TLS certificate (PEM); with -tls-key")
	key := flag.String("tls-key", "", "the server's TLS key (PEM)")
	clientCA := flag.String("client-ca", "", "CA (PEM) that clients' certificates must chain to: mTLS")
	subset := flag.Int("subset", 0, "give each client that names itself (bootstrap -client) this many endpoints of a target, balanced across clients (0: all)")
	flag.Parse()
	log, _ := zap.NewProduction()
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, log, *listen, *kubeconfig, *metrics, *cert, *key, *clientCA, *subset); err != nil {
		log.Error("xds-server failed", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
}

func serve(ctx context.Context, log *zap.Logger, listen, kubeconfig, metricsAddr, cert, key, clientCA string, subset int) error {
	opts := []grpc.ServerOption{
		// Clients keep their stream for hours: let their keepalive pings
		// through, and find dead ones.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	}
	creds, err := serverTLS(cert, key, clientCA)
	if err != nil {
		return err
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	cfg, _, err := kubernetes.LoadConfig(kubeconfig)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src, err := kubernetes.New(cfg, kubernetes.WithLogger(log), kubernetes.WithRegisterer(reg))
	if err != nil {
		return err
	}
	hub, err := core.NewHub(src, core.WithLogger(log))
	if err != nil {
		return err
	}
	defer hub.Close()
	if subset < 0 {
		return fmt.Errorf("-subset %d: want 0 (every endpoint) or more", subset)
	}
	xopts := []xds.Option{xds.WithLogger(log), xds.WithRegisterer(reg), xds.WithServerOptions(opts...)}
	if subset > 0 {
		xopts = append(xopts, xds.WithSubsetSize(func(core.Target) int { return subset }))
	}
	srv, err := xds.New(hub, xopts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if metricsAddr != "" {
		mlis, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(mlis) }()
		defer hs.Close()
		log.Info("metrics", zap.String("address", mlis.Addr().String()))
	}
	log.Info("serving xDS", zap.String("address", lis.Addr().String()), zap.Bool("tls", creds != nil), zap.Bool("mtls", clientCA != ""))
	if err := srv.Serve(ctx, lis); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// serverTLS returns the server's credentials: none, TLS, or mTLS.
func serverTLS(cert, key, clientCA string) (credentials.TransportCredentials, error) {
	if cert == "" && key == "" {
		if clientCA != "" {
			return nil, errors.New("-client-ca needs -tls-cert and -tls-key")
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no PEM certificate in it", clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

// bootstrap prints a client's bootstrap.
func bootstrap(args []string) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	server := fs.String("server", "", "this server's address as clients dial it (host:port), required")
	zone := fs.String("zone", "", "the client's zone: its own zone's pods first")
	node := fs.String("node", "", "the client's node id, for the server's logs")
	client := fs.String("client", "", "the client's own id (its pod name): it gets its subset when the server subsets (-subset)")
	ca := fs.String("ca", "", "CA (PEM) the server's certificate chains to: TLS")
	cert := fs.String("cert", "", "the client's certificate (PEM), with -key: mTLS")
	key := fs.String("key", "", "the client's key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b := xds.Bootstrap{ServerURI: *server, NodeID: *node, Zone: *zone, Client: *client}
	if *ca != "" || *cert != "" || *key != "" {
		b.TLS = &xds.BootstrapTLS{CAFile: *ca, CertFile: *cert, KeyFile: *key}
	}
	data, err := b.JSON()
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(data))
	return err
}
