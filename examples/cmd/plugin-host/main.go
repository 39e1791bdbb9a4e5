// Command plugin-host composes a source plugin with the gRPC resolver and
// a sink plugin: it runs both binaries, dials the greeter through
// "plugin:///<target>", makes calls and prints how many each backend
// answered. It exits 1 if a call failed.
//
//	plugin-host -source ./plugin-file-source -source-arg /etc/disco -sink ./plugin-log-sink -target greeter
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
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
	flag.Parse()
	log, _ := zap.NewDevelopment()
	defer log.Sync()
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
