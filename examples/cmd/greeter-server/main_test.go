package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/fleet"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

// The real binaries: three greeter-server processes in pods, greeter-client
// outside the cluster (kubeconfig) through each sink; then a server drains
// and exits cleanly on SIGTERM.
func TestServerAndClientBinaries(t *testing.T) {
	n := podnet.NewForTest(t)
	cp := kubetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	for _, c := range []string{"greeter-server", "greeter-client"} {
		out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, c), "../"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	fl, err := fleet.New(ctx, cs, n, "demo", "greeter", "grpc", 50051, 1)
	if err != nil {
		t.Fatal(err)
	}
	var servers []*exec.Cmd
	var addrs []string
	for _, name := range []string{"greeter-a", "greeter-b", "greeter-c"} {
		p, err := fl.AddPod(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		cmd := p.Command(ctx, filepath.Join(bin, "greeter-server"))
		cmd.Env = append(os.Environ(), "POD_NAME="+name)
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, cmd)
		addrs = append(addrs, p.Addr(50051))
		fl.Set(name, true, false)
	}
	for _, a := range addrs { // like a readiness probe: wait until each server listens
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("server at %s never listened: %v", a, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := fl.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	for _, via := range []string{"resolver", "pool"} {
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "greeter-client"), "-kubeconfig", cp.Kubeconfig(),
			"-target", "kubernetes:///greeter.demo:grpc", "-via", via, "-calls", "600").CombinedOutput()
		if err != nil {
			t.Fatalf("client -via %s: %v\n%s", via, err, out)
		}
		if !strings.Contains(string(out), "calls 600, failed 0, pods 3") {
			t.Fatalf("client -via %s:\n%s", via, out)
		}
		t.Logf("greeter-client -via %s:\n%s", via, out)
	}
	if err := servers[0].Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := servers[0].Wait(); err != nil {
		t.Fatalf("greeter-server after SIGTERM: %v", err)
	}
}
