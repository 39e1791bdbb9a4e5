package xds_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/xds"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The agent's config turns subsetting on per target; sizes out of range
// and targets the source cannot read are refused, naming the key.
func TestFactorySubsets(t *testing.T) {
	fac := xds.Factory()
	cfg := fac.NewConfig().(*xds.Config)
	cfg.Subsets.Size = -1
	cfg.Subsets.Targets = map[string]int{"greeter": 200_000}
	err := fac.Validate(cfg)
	if err == nil || !strings.Contains(err.Error(), "subsets: size: -1") || !strings.Contains(err.Error(), "subsets: targets: greeter: 200000") {
		t.Fatalf("Validate: %v, want both keys named", err)
	}

	tg := core.Target{Name: "greeter"}
	hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{tg: set(t, subsetEndpoints(0, 4)...)}))
	env := core.Env{Name: "x", Log: zap.NewNop()}

	bad := fac.NewConfig().(*xds.Config)
	bad.Listen = freeAddr(t)
	bad.Subsets.Targets = map[string]int{"Not a target": 2}
	s, err := fac.NewSink(env, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Attach(hub); err == nil || !strings.Contains(err.Error(), `subsets: targets: "Not a target"`) {
		t.Fatalf("Attach with a bad target key: %v", err)
	}
	s.Close()

	cfg = fac.NewConfig().(*xds.Config)
	cfg.Listen = freeAddr(t)
	cfg.Subsets.Targets = map[string]int{"greeter": 2}
	s, err = fac.NewSink(env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Attach(hub)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := &fixture{t: t, uri: cfg.Listen}
	ctx, cancel := context.WithCancel(context.Background())
	ws := []*watcher{f.watch(ctx, "greeter?client=a"), f.watch(ctx, "greeter?client=b")}
	balancedWithin(t, ws, subsetEndpoints(0, 4), 2)
	cancel()
	for _, w := range ws {
		<-w.done
	}
}
