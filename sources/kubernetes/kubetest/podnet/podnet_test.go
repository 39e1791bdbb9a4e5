package podnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serve runs a gRPC health server in the pod that reports the pod's name as
// a SERVING service and records the addresses its callers come from.
func serve(t *testing.T, p *podnet.Pod) (callers func() []string) {
	t.Helper()
	ln, err := p.Listen("tcp", ":50051")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var from []string
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if pr, ok := peer.FromContext(ctx); ok {
			mu.Lock()
			from = append(from, pr.Addr.String())
			mu.Unlock()
		}
		return h(ctx, req)
	}))
	hs := health.NewServer()
	hs.SetServingStatus(p.Name(), healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), from...)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestGRPCServerInPodAnswersFromPodIP(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := ctxFor(t, time.Minute)
	var pods []*podnet.Pod
	var callers []func() []string
	for i := range 3 {
		p, err := n.AddPod(ctx, fmt.Sprintf("greeter-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !n.Subnet().Contains(p.IP()) || p.IP() == n.Gateway() {
			t.Fatalf("pod IP %s outside %s", p.IP(), n.Subnet())
		}
		pods = append(pods, p)
		callers = append(callers, serve(t, p))
	}
	for i, p := range pods {
		cc := dial(t, p.Addr(50051))
		var pr peer.Peer
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: p.Name()}, grpc.Peer(&pr))
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("pod %s: %v %v", p.Name(), resp, err)
		}
		if pr.Addr.String() != p.Addr(50051) {
			t.Fatalf("answered from %s, want %s", pr.Addr, p.Addr(50051))
		}
		// The server is this pod's and no other's.
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: pods[(i+1)%3].Name()})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("pod %s knows another pod's name: %v", p.Name(), err)
		}
		// The caller came across the bridge, from the gateway address.
		from := callers[i]()
		if len(from) == 0 || !strings.HasPrefix(from[0], n.Gateway().String()+":") {
			t.Fatalf("server saw callers %v, want from %s", from, n.Gateway())
		}
	}
}

// bridgeAddr returns the hardware address of the interface holding the
// network's gateway address (its bridge).
func bridgeAddr(t *testing.T, n *podnet.Network) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range ifs {
		addrs, _ := it.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == n.Gateway().String() {
				return it.HardwareAddr.String()
			}
		}
	}
	t.Fatalf("no interface holds %s", n.Gateway())
	return ""
}

// Pods come and go while a steady pod serves: the bridge keeps its address
// (a Linux bridge otherwise takes its lowest port's and changes with the
// ports), so the address the steady pod cached for the gateway stays right
// and its replies keep flowing. Without the fixed address, a steady pod that
// learned the gateway's address while a newer pod's port was the lowest sent
// its replies to a deleted port once that pod went, and its calls stalled
// ~5 s (until the kernel probed the gateway again).
func TestBridgeAddressStaysWhilePodsComeAndGo(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := ctxFor(t, time.Minute)
	mac := bridgeAddr(t, n)
	steady, err := n.AddPod(ctx, "steady")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, steady)
	client := healthpb.NewHealthClient(dial(t, steady.Addr(50051)))
	check := func(when string) {
		t.Helper()
		if got := bridgeAddr(t, n); got != mac {
			t.Fatalf("%s: bridge address %s, was %s", when, got, mac)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: steady.Name()}); err != nil {
			t.Fatalf("%s: steady pod: %v", when, err)
		}
	}
	check("steady pod alone")
	for round := range 3 {
		var churn []*podnet.Pod
		for i := range 4 {
			p, err := n.AddPod(ctx, fmt.Sprintf("churn-%d-%d", round, i))
			if err != nil {
				t.Fatal(err)
			}
			churn = append(churn, p)
		}
		// The steady pod learns the gateway's address afresh now, while
		// the new ports exist (a cache entry expiring does the same).
		if out, err := exec.CommandContext(ctx, "ip", "-n", steady.Namespace(), "neigh", "flush", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("flush: %v: %s", err, out)
		}
		check(fmt.Sprintf("round %d, 4 pods added", round))
		for _, p := range churn {
			if err := p.Delete(); err != nil {
				t.Fatal(err)
			}
		}
		check(fmt.Sprintf("round %d, 4 pods deleted", round))
	}
	out, err := exec.CommandContext(ctx, "ip", "-n", steady.Namespace(), "neigh", "show", n.Gateway().String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), mac) {
		t.Fatalf("steady pod's neighbour entry for the gateway: %q (%v), want %s", out, err, mac)
	}
}

func TestKillResetsConnections(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := ctxFor(t, time.Minute)
	p, err := n.AddPod(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, p)
	cc := dial(t, p.Addr(50051))
	hc := healthpb.NewHealthClient(cc)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	begin := time.Now()
	_, err = hc.Check(short, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call to a killed pod: %v, want Unavailable", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("call to a killed pod took %v: connections were not reset", d)
	}
}

func TestDisconnectDropsPackets(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := ctxFor(t, time.Minute)
	p, err := n.AddPod(ctx, "island")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if err := p.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.DialContext(ctx, "tcp", p.Addr(7000)); err == nil {
		c.Close()
		t.Fatal("dial succeeded through a link that is down")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("dial error %v, want a timeout (dropped, not refused)", err)
	}
	if err := p.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	d.Timeout = 5 * time.Second
	c, err := d.DialContext(ctx, "tcp", p.Addr(7000))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestCommandRunsInPod(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := ctxFor(t, time.Minute)
	p, err := n.AddPod(ctx, "cmd")
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Command(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), p.IP().String()+"/24") {
		t.Fatalf("inside the pod: %s", out)
	}
	sleeper := p.Command(ctx, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	if sleeper.ProcessState == nil || sleeper.ProcessState.Exited() {
		t.Fatalf("process not killed: %v", sleeper.ProcessState)
	}
}

func ipList(t *testing.T, args ...string) string {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v %s", args, err, out)
	}
	return string(out)
}

func TestCloseRemovesEverything(t *testing.T) {
	if err := podnet.Check(); err != nil {
		if podnet.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx := ctxFor(t, time.Minute)
	n, err := podnet.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := n.AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddPod(ctx, "a"); err == nil {
		t.Fatal("duplicate pod name accepted")
	}
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	q, err := n.AddPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if l := ipList(t, "netns", "list"); strings.Contains(l, p.Namespace()) || strings.Contains(l, q.Namespace()) {
		t.Fatalf("namespaces left: %s", l)
	}
	if l := ipList(t, "-o", "addr"); strings.Contains(l, n.Gateway().String()+"/") {
		t.Fatalf("bridge left: %s", l)
	}
	if files, _ := filepath.Glob(filepath.Join(os.TempDir(), "disco-podnet", fmt.Sprintf("%d-*.json", os.Getpid()))); len(files) != 0 {
		t.Fatalf("state files left: %v", files)
	}
}

// What a killed test binary left (a namespace, a link, a state file naming a
// dead process) is removed by the next New.
func TestNewSweepsWhatDeadRunsLeft(t *testing.T) {
	if err := podnet.Check(); err != nil {
		if podnet.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx := ctxFor(t, time.Minute)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	ns, link := "dnsweep-test", "dhsweeptest"
	t.Cleanup(func() { // in case the sweep did not run
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "link", "del", link).Run()
	})
	ipList(t, "netns", "add", ns)
	ipList(t, "link", "add", link, "type", "bridge")
	st, _ := json.Marshal(map[string]any{"pid": dead.Process.Pid, "bridge": "", "namespaces": []string{ns}, "links": []string{link}})
	file := filepath.Join(os.TempDir(), "disco-podnet", fmt.Sprintf("%d-deadbeef.json", dead.Process.Pid))
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, st, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := podnet.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if strings.Contains(ipList(t, "netns", "list"), ns) {
		t.Fatal("namespace of a dead run not swept")
	}
	if _, err := net.InterfaceByName(link); err == nil {
		t.Fatal("link of a dead run not swept")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatal("state file of a dead run not removed")
	}
}

// Addresses go round robin and a deleted pod's address returns only after the
// rest of the subnet, so hundreds of pod replacements never exhaust it.
func TestAddressesRoundRobin(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := ctxFor(t, 2*time.Minute)
	host := func(p *podnet.Pod) byte { return p.IP().As4()[3] }
	a, err := n.AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if host(a) != 2 || host(b) != 3 {
		t.Fatalf("first hosts %d %d, want 2 3", host(a), host(b))
	}
	if err := a.Delete(); err != nil {
		t.Fatal(err)
	}
	c, err := n.AddPod(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if host(c) != 4 {
		t.Fatalf("after deleting .2 the next pod got .%d, want .4", host(c))
	}
	for i := range 260 { // 251 free addresses: wraps around the /24
		p, err := n.AddPod(ctx, fmt.Sprint("churn-", i))
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		if p.IP() == b.IP() || p.IP() == c.IP() {
			t.Fatalf("pod %d got the address of a live pod", i)
		}
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
	}
}

// ResetConnections resets what the pod accepted and leaves the server
// listening; Unplug makes the pod unreachable without a reset.
func TestResetConnectionsAndUnplug(t *testing.T) {
	n := podnet.NewForTest(t)
	ctx := context.Background()
	p, err := n.AddPod(ctx, "reset-0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c, err := net.DialTimeout("tcp", p.Addr(7000), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	p.ResetConnections()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after ResetConnections = %v, want a reset", err)
	}
	c2, err := net.DialTimeout("tcp", p.Addr(7000), 5*time.Second)
	if err != nil {
		t.Fatalf("the server stopped listening: %v", err)
	}
	c2.Close()
	<-accepted
	if err := p.Unplug(ctx); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if _, err := net.DialTimeout("tcp", p.Addr(7000), 500*time.Millisecond); err == nil || !isTimeout(err) {
		t.Fatalf("dial after Unplug = %v after %v, want a timeout (silence, no reset)", err, time.Since(begin))
	}
	ln.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
