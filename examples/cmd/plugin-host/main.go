// Command plugin-host composes a source plugin with the gRPC resolver and
// a sink plugin: it runs both binaries, dials the greeter through
// "plugin:///<target>", makes calls and prints how many each backend
// answered. It exits 1 if a call failed.
//
//	plugin-host -source ./plugin-file-source -source-arg /etc/disco -sink ./plugin-log-sink -target greeter
//
// With -example (make plugin-example) it needs nothing: it builds the
// plugin-file-source and plugin-log-sink binaries, starts two greeter
// servers on loopback, writes a file naming them, and runs as above.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin"
	"github.com/disco-lb/disco/examples/greeter"
	"github.com/disco-lb/disco/sinks/grpcresolver"
)

func main() {
	sourceBin := flag.String("source", "plugin-file-source", "source plugin binary")
	sourceArg := flag.String("source-arg", "", "argument of the source plugin")
	sinkBin := flag.String("sink", "", "sink plugin binary (optional)")
	target := flag.String("target", "greeter", "target to dial (plugin:///<target>)")
	calls := flag.Int("calls", 100, "calls to make")
	example := flag.Bool("example", false, "build the example plugins, start two greeters on loopback and use them")
	exampleSource := flag.String("example-source", "file", "with -example, the source plugin: file (Go) or node (Node.js, needs node, npm and openssl)")
	debug := flag.Bool("debug", false, "log at DEBUG (go-plugin's own lines too)")
	flag.Parse()
	cfg := zap.NewDevelopmentConfig()
	cfg.DisableStacktrace = true
	cfg.DisableCaller = true
	if !*debug {
		cfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	}
	log, _ := cfg.Build()
	defer log.Sync()
	if *example {
		cleanup, err := setUpExample(log, *exampleSource, sourceBin, sourceArg, sinkBin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "plugin-host:", err)
			os.Exit(1)
		}
		defer cleanup()
	}
	if err := run(log, *sourceBin, *sourceArg, *sinkBin, *target, *calls); err != nil {
		fmt.Fprintln(os.Stderr, "plugin-host:", err)
		os.Exit(1)
	}
}

func run(log *zap.Logger, sourceBin, sourceArg, sinkBin, target string, calls int) error {
	var args []string
	if sourceArg != "" {
		args = append(args, sourceArg)
	}
	src, err := plugin.NewSource(sourceBin, plugin.WithArgs(args...), plugin.WithLogger(log))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no source plugin binary %s: build it first (go build ./cmd/plugin-file-source), or run with -example", sourceBin)
		}
		return err
	}
	defer src.Close()
	hub, err := core.NewHub(src)
	if err != nil {
		return err
	}
	defer hub.Close()
	if sinkBin != "" {
		sink, err := plugin.NewSink(sinkBin, plugin.WithLogger(log))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no sink plugin binary %s: build it first (go build ./cmd/plugin-log-sink), or run with -example", sinkBin)
			}
			return err
		}
		defer sink.Close()
		tg, err := core.ParseTarget(target, core.HostSyntax)
		if err != nil {
			return err
		}
		sub, err := hub.Subscribe("plugin-sink", sink, tg)
		if err != nil {
			return err
		}
		defer sub.Close()
	}
	b, err := grpcresolver.New("plugin", hub)
	if err != nil {
		return err
	}
	defer b.Close()
	cc, err := grpc.NewClient("plugin:///"+target, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, b.DialOptions()...)...)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := greeter.NewClient(cc)
	perBackend := map[string]int{}
	failed := 0
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		who, err := client.SayHello(ctx, "plugin-host", grpc.WaitForReady(true))
		cancel()
		if err != nil {
			failed++
			log.Warn("call failed", zap.Error(err))
			continue
		}
		perBackend[who]++
	}
	names := make([]string, 0, len(perBackend))
	for n := range perBackend {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("%s answered %d calls\n", n, perBackend[n])
	}
	fmt.Printf("%d calls, %d failed\n", calls, failed)
	if failed > 0 {
		return fmt.Errorf("%d calls failed", failed)
	}
	return nil
}

// setUpExample builds the example plugins into a temporary directory,
// starts two greeter servers on loopback and writes a file naming them as
// the target greeter; it points the flags at all that. With source "node"
// the source plugin is the Node.js one (plugins/node-json-source, its npm
// packages installed into the temporary directory). The function it
// returns removes it all.
func setUpExample(log *zap.Logger, source string, sourceBin, sourceArg, sinkBin *string) (func(), error) {
	if source != "file" && source != "node" {
		return nil, fmt.Errorf("-example-source %q: file or node", source)
	}
	dir, err := os.MkdirTemp("", "disco-plugin-example")
	if err != nil {
		return nil, err
	}
	var stops []func()
	cleanup := func() {
		for _, stop := range stops {
			stop()
		}
		os.RemoveAll(dir)
	}
	for _, name := range []string{"plugin-file-source", "plugin-log-sink"} {
		log.Info("building the example plugin", zap.String("name", name))
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), "github.com/disco-lb/disco/examples/cmd/"+name).CombinedOutput()
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("building %s (run from the repository): %v\n%s", name, err, out)
		}
	}
	var addrs []string
	for _, name := range []string{"greeter-a", "greeter-b"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cleanup()
			return nil, err
		}
		gs := grpc.NewServer()
		greeter.Register(gs, &greeter.Server{Pod: name})
		go func() { _ = gs.Serve(lis) }()
		stops = append(stops, gs.Stop)
		addrs = append(addrs, lis.Addr().String())
	}
	targets := filepath.Join(dir, "targets")
	if err := os.Mkdir(targets, 0o755); err != nil {
		cleanup()
		return nil, err
	}
	name, data := "greeter.yaml", fmt.Sprintf("targets:\n  - target: greeter\n    endpoints: [%s, %s]\n", addrs[0], addrs[1])
	*sourceBin = filepath.Join(dir, "plugin-file-source")
	if source == "node" {
		name, data = "greeter.json", fmt.Sprintf("[%q, %q]\n", addrs[0], addrs[1])
		if *sourceBin, err = nodePlugin(log, dir); err != nil {
			cleanup()
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(targets, name), []byte(data), 0o644); err != nil {
		cleanup()
		return nil, err
	}
	log.Info("two greeters on loopback, named in a file the source plugin reads", zap.Strings("addresses", addrs), zap.String("file", filepath.Join(targets, name)))
	*sourceArg, *sinkBin = targets, filepath.Join(dir, "plugin-log-sink")
	return cleanup, nil
}

// nodePlugin installs the Node.js source plugin's npm packages into dir
// and returns a script that runs it: the plugin binary for the host.
func nodePlugin(log *zap.Logger, dir string) (string, error) {
	script, err := filepath.Abs("plugins/node-json-source/index.js")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("the Node.js plugin: %v (run from examples/)", err)
	}
	log.Info("installing the Node.js plugin's npm packages", zap.String("into", dir))
	npm := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--silent", "@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1")
	if out, err := npm.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install (needs node and npm): %v\n%s", err, out)
	}
	bin := filepath.Join(dir, "node-json-source")
	wrapper := fmt.Sprintf("#!/bin/sh\nNODE_PATH=%q exec node %q \"$@\"\n", filepath.Join(dir, "node_modules"), script)
	return bin, os.WriteFile(bin, []byte(wrapper), 0o755)
}
