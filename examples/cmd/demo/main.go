// Command demo shows disco doing its job for real, on one machine: a real
// kube-apiserver and etcd, greeter pods in network namespaces with their own
// 10.244.x.y addresses, their EndpointSlices written the way the
// EndpointSlice controller does, and a gRPC client that balances across them
// through kubernetes:///greeter.demo:grpc while the pods scale up, restart
// one by one and scale down. It prints calls per pod and every discovery
// event as they happen, then a summary; it exits 0 only if no call failed.
//
// Run it with `make demo` (which builds the Kubernetes binaries first), as
// root. Ctrl-C stops it and removes everything it made.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/examples/greeter"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/fleet"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

type config struct {
	pods, scaleUp, scaleDown int
	phase                    time.Duration
	rate                     int
	concurrency              int
	preStop                  time.Duration
}

func main() {
	var c config
	flag.IntVar(&c.pods, "pods", 3, "greeter pods at the start")
	flag.IntVar(&c.scaleUp, "scale-up", 5, "pods after scaling up")
	flag.IntVar(&c.scaleDown, "scale-down", 2, "pods after scaling down at the end")
	flag.DurationVar(&c.phase, "phase", 4*time.Second, "how long each phase runs under load (start, scaled up, restarted, scaled down)")
	flag.IntVar(&c.rate, "rate", 400, "calls per second the client sends (0: as fast as it can)")
	flag.IntVar(&c.concurrency, "concurrency", 16, "concurrent callers")
	flag.DurationVar(&c.preStop, "prestop", 500*time.Millisecond, "preStop delay of a deleted pod before it drains")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: demo [flags]

Runs a local Kubernetes control plane, greeter pods in network namespaces
and a gRPC client balancing across them through disco's resolver, while the
pods scale up, restart one by one and scale down. It makes network
namespaces: as root directly, otherwise inside a user + network namespace of
its own (needs unprivileged user namespaces and util-linux unshare). Needs
iproute2 and the binaries of 'make k8s-bins'.

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if os.Geteuid() != 0 && os.Getenv(usernsEnv) == "" {
		// Not root: run in a user + network + mount namespace of our own,
		// where we are root over nothing but our own network.
		if err := reexecInUserNamespace(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(2)
		}
		return
	}
	if os.Getenv(usernsEnv) != "" {
		if err := setupUserNamespace(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(2)
		}
	}
	if err := preflight(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := run(ctx, c, os.Stdout)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demo: interrupted; everything it made has been removed")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if s.failed > 0 {
		fmt.Fprintf(os.Stderr, "demo: %d of %d calls failed\n", s.failed, s.ok+s.failed)
		os.Exit(1)
	}
}

const usernsEnv = "DISCO_DEMO_USERNS"

// reexecInUserNamespace runs this program again under `unshare` in new user,
// network and mount namespaces (root mapped to the caller), and exits with
// its status. It says what is missing when the kernel or the machine cannot.
func reexecInUserNamespace() error {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return errors.New("not root, and `unshare` (util-linux) is missing to run in a user namespace: run as root (sudo make demo) or apt-get install -y util-linux")
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return errors.New("not root, and this kernel allows no user namespaces (user.max_user_namespaces = 0): run as root (sudo make demo) or sysctl -w user.max_user_namespaces=15000")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(unshare, append([]string{"--user", "--map-root-user", "--net", "--mount", "--fork", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), usernsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Ctrl-C reaches the child through the terminal; forward SIGTERM.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("not root, and starting a user namespace failed (%v): run as root (sudo make demo), or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 on Debian)", err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.ExitCode())
	}
	return err
}

// setupUserNamespace prepares our own namespaces: a private /run for `ip
// netns`, and loopback up for the control plane.
func setupUserNamespace() error {
	if err := syscall.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("user namespace: mount /run: %w (is unprivileged mounting allowed?)", err)
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("user namespace: loopback up: %v: %s", err, out)
	}
	return nil
}

// preflight says exactly what is missing.
func preflight() error {
	if err := podnet.Check(); err != nil {
		return err
	}
	if _, err := kubetest.Binaries(); err != nil {
		return err
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the `ip` command is missing: apt-get install -y iproute2")
	}
	return nil
}

type summary struct {
	ok, failed int64
	perPod     map[string]int64
}

// run is the whole demo; everything it makes is gone when it returns.
func run(ctx context.Context, c config, out io.Writer) (summary, error) {
	var outMu sync.Mutex // lines come from the demo and from discovery events
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	say("== starting a Kubernetes control plane (etcd + kube-apiserver) on loopback")
	begin := time.Now()
	cp, err := kubetest.Start(ctx)
	if err != nil {
		return summary{}, err
	}
	defer cp.Stop()
	say("   ready in %v", time.Since(begin).Round(time.Millisecond))
	net, err := podnet.New(ctx)
	if err != nil {
		return summary{}, err
	}
	defer net.Close()
	cs, err := cp.AdminClient()
	if err != nil {
		return summary{}, err
	}
	fl, err := fleet.New(ctx, cs, net, "demo", "greeter", "grpc", 50051, 1)
	if err != nil {
		return summary{}, err
	}

	// Pods: a greeter server in each network namespace.
	var mu sync.Mutex
	servers := map[string]*grpc.Server{}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, gs := range servers {
			gs.Stop()
		}
	}()
	next := 0
	addPod := func() (string, error) {
		name := fmt.Sprintf("greeter-%d", next)
		next++
		p, err := fl.AddPod(ctx, name, "")
		if err != nil {
			return "", err
		}
		ln, err := p.Listen("tcp", ":50051")
		if err != nil {
			return "", err
		}
		gs := grpc.NewServer(greeter.ServerKeepalive())
		greeter.Register(gs, &greeter.Server{Pod: name})
		go gs.Serve(ln)
		mu.Lock()
		servers[name] = gs
		mu.Unlock()
		fl.Set(name, true, false) // its readiness probe passes
		return name, fl.Publish(ctx)
	}
	drainPod := func(name string) error {
		mu.Lock()
		gs := servers[name]
		delete(servers, name)
		mu.Unlock()
		return fl.Drain(ctx, name, c.preStop, gs.GracefulStop)
	}
	for range c.pods {
		if _, err := addPod(); err != nil {
			return summary{}, err
		}
	}
	say("== %d greeter pods on %s, EndpointSlice demo/greeter-0 written", c.pods, net.Subnet())

	// The client: disco's Kubernetes source and gRPC resolver.
	src, err := kubernetes.New(cp.AdminConfig())
	if err != nil {
		return summary{}, err
	}
	hub, err := core.NewHub(src) // the resolver and the event printer share one watch
	if err != nil {
		return summary{}, err
	}
	defer hub.Close()
	b, err := grpcresolver.NewKubernetes(hub)
	if err != nil {
		return summary{}, err
	}
	defer b.Close()
	events, err := hub.Subscribe("demo-events",
		core.SinkFunc(func(_ context.Context, u core.Update) error {
			for _, e := range u.Added {
				say("   discovery: + %-10s %s %s", e.Name, e.HostPort(), conditions(e))
			}
			for _, ch := range u.Changed {
				say("   discovery: ~ %-10s %s", ch.New.Name, conditions(ch.New))
			}
			for _, e := range u.Removed {
				say("   discovery: - %-10s %s", e.Name, e.HostPort())
			}
			return nil
		}), core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"})
	if err != nil {
		return summary{}, err
	}
	defer events.Close()
	// The recommended setup: least request, keepalive, unary retries on
	// UNAVAILABLE (see the README, "When a pod dies").
	cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc",
		append(b.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return summary{}, err
	}
	defer cc.Close()
	client := greeter.NewClient(cc)
	say("== client: kubernetes:///greeter.demo:grpc, disco's resolver, its recommended setup")
	say("   (least request, keepalive, retry); %d callers, %d calls/s", c.concurrency, c.rate)

	// Load.
	calls := newTally()
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopLoad(); wg.Wait() }() // also on early returns
	var tick <-chan time.Time
	if c.rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(c.rate))
		defer t.Stop()
		tick = t.C
	}
	for range c.concurrency {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-loadCtx.Done():
						return
					}
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				pod, err := client.SayHello(cctx, "demo")
				cancel()
				if err != nil {
					if loadCtx.Err() != nil {
						return
					}
					calls.failure()
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				calls.success(pod)
			}
		})
	}

	// A phase: its action, then c.phase of steady load, a status line a
	// second (calls/s, failures, each live pod's share of the window; a pod
	// that left, named once as gone).
	var phases []phaseResult
	prev := calls.snapshot()
	shown := fl.Names()
	status := func(title string) {
		now := calls.snapshot()
		live := fl.Names()
		var gone []string
		for _, p := range shown {
			if !slices.Contains(live, p) {
				gone = append(gone, p)
			}
		}
		say("%s", statusLine(title, prev, now, live, gone))
		prev, shown = now, live
	}
	phase := func(title, announce string, action func() error) error {
		say("== %s", announce)
		begin := calls.snapshot()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // status lines during the action too
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
					status(title)
				}
			}
		}()
		var err error
		if action != nil {
			err = action()
		}
		steady := calls.snapshot()
		if err == nil {
			end := time.Now().Add(c.phase)
			for time.Now().Before(end) && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(time.Until(end)):
				}
			}
		}
		close(stop)
		<-done
		status(title)
		last := calls.snapshot()
		ok, failed, _ := last.since(begin)
		_, _, per := last.since(steady)
		live := fl.Names()
		phases = append(phases, phaseResult{name: title, calls: ok + failed, failed: failed, live: len(live), spread: spread(per, live)})
		return err
	}
	if err := phase("steady", fmt.Sprintf("steady: %d pods", c.pods), nil); err != nil {
		return summary{}, err
	}
	if err := phase("scale up", fmt.Sprintf("scale %d -> %d", c.pods, c.scaleUp), func() error {
		for range c.scaleUp - c.pods {
			if _, err := addPod(); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return summary{}, err
	}
	if err := phase("rolling restart", fmt.Sprintf("rolling restart: new pod ready; old one terminating, %v preStop, drained", c.preStop), func() error {
		for _, old := range fl.Names() {
			if ctx.Err() != nil {
				return nil
			}
			if _, err := addPod(); err != nil {
				return err
			}
			if err := drainPod(old); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return summary{}, err
	}
	if err := phase("scale down", fmt.Sprintf("scale %d -> %d", len(fl.Names()), c.scaleDown), func() error {
		for names := fl.Names(); len(names) > c.scaleDown && ctx.Err() == nil; names = fl.Names() {
			if err := drainPod(names[0]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return summary{}, err
	}

	stopLoad()
	wg.Wait()
	if ctx.Err() != nil {
		say("== interrupted: cleaning up")
		return summary{}, ctx.Err()
	}
	final := calls.snapshot()
	s := summary{ok: final.ok, failed: final.failed, perPod: final.perPod}
	say("== summary: %d calls sent, %d failed, %d pods served", s.ok+s.failed, s.failed, len(s.perPod))
	for _, line := range summaryLines(phases) {
		say("%s", line)
	}
	if err, _ := firstErr.Load().(error); err != nil {
		say("   first failure: %v", err)
	}
	return s, nil
}

func conditions(e *core.Endpoint) string {
	c := e.Conditions
	return fmt.Sprintf("ready=%v serving=%v terminating=%v", c.IsReady(), c.IsServing(), c.IsTerminating())
}
