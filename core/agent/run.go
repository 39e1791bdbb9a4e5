package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Run starts the agent and serves until ctx ends: its HTTP endpoints on
// the config's http.listen, a reload on SIGHUP and whenever the file
// changes (read once it is quiet, so a ConfigMap's swap or an editor's
// save is read whole), and on ctx's end a drain and a stop.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	listen := a.cfg.HTTP.Listen
	a.mu.Unlock()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", listen, err)
	}
	if err := a.Start(); err != nil {
		lis.Close()
		return err
	}
	a.log.Info("agent: running", zap.String("config", a.path), zap.String("http", lis.Addr().String()))
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	httpDone := make(chan struct{})
	go func() { defer close(httpDone); _ = srv.Serve(lis) }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go a.watch(ctx)
	for {
		select {
		case <-hup:
			a.log.Info("agent: SIGHUP: reloading")
			a.Reload(true)
		case <-ctx.Done():
			a.log.Info("agent: stopping: draining deliveries in flight")
			a.Stop(context.Background())
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
			<-httpDone
			a.log.Info("agent: stopped")
			return nil
		}
	}
}

// watch reloads when the file's contents change, once they are the same
// twice reload.settle apart.
func (a *Agent) watch(ctx context.Context) {
	for {
		a.mu.Lock()
		interval, settle, last := a.cfg.Reload.Interval, a.cfg.Reload.Settle, a.hash
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		first, err := os.ReadFile(a.path)
		if err != nil || sha256.Sum256(first) == last {
			continue // an unreadable file is retried; a reload says why once it is read
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(settle):
		}
		second, err := os.ReadFile(a.path)
		if err != nil || sha256.Sum256(second) != sha256.Sum256(first) {
			continue // still being written
		}
		a.log.Info("agent: the config file changed: reloading", zap.String("config", a.path))
		a.Reload(false)
	}
}

// Main is a distribution's main: the disco command with the factories it
// includes. It returns the exit code.
//
//	disco run -config disco.yaml
//	disco validate -config disco.yaml
//	disco version
func Main(args []string, f Factories, version string, stdout, stderr io.Writer) int {
	usage := func() {
		fmt.Fprintln(stderr, "usage: disco run -config FILE | disco validate -config FILE | disco version")
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "disco.yaml", "the configuration file")
	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "disco %s\nsources: %s\nsinks: %s\n", version, strings.Join(f.sourceTypes(), ", "), strings.Join(f.sinkTypes(), ", "))
		return 0
	case "validate":
		if fs.Parse(args) != nil {
			return 2
		}
		cfg, err := Load(*config, f)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: valid: %d sources, %d sinks, %d pipelines\n", *config, len(cfg.Sources), len(cfg.Sinks), len(cfg.Pipelines))
		return 0
	case "run":
		if fs.Parse(args) != nil {
			return 2
		}
		level := zap.NewAtomicLevelAt(zapcore.InfoLevel)
		zc := zap.NewProductionConfig()
		zc.Level = level
		zc.DisableStacktrace = true
		log, err := zc.Build()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer log.Sync()
		a, err := New(*config, f, log, level)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := a.Run(ctx); err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				log.Error("agent: cannot start", zap.Error(err))
			}
			fmt.Fprintln(stderr, "disco:", err)
			return 1
		}
		return 0
	default:
		usage()
		return 2
	}
}
