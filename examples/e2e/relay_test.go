package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The relay measured against direct watches (BENCHMARKS.md, "The relay"):
// N client processes (examples/cmd/scale-client, each a real grpc-go
// client) of a Service of 4 pods on the test API server, discovering its
// endpoints (a) each through disco's resolver in process, (b) all through
// one agent serving xDS (the node-local relay), (c) each with a plain
// client-go watch of the Service's EndpointSlices (kuberesolver's way, the
// baseline). 100 EndpointSlice changes (a pod not ready, then ready again,
// 50 times); for each: what the API server spent (its watches, the bytes
// its watches sent, its CPU) and how long each client took to see a pod
// come back (its new connection accepted by the pod; for (c), the watch
// event).
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 1x -count 3 -timeout 40m ./e2e

// connLog records a pod's connections: when each was accepted, and how
// many are open.
type connLog struct {
	net.Listener
	mu       sync.Mutex
	accepted []time.Time
	open     int
}

type loggedConn struct {
	net.Conn
	log  *connLog
	once sync.Once
}

func (c *loggedConn) Close() error {
	c.once.Do(func() { c.log.mu.Lock(); c.log.open--; c.log.mu.Unlock() })
	return c.Conn.Close()
}

func (l *connLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepted, l.open = append(l.accepted, time.Now()), l.open+1
	l.mu.Unlock()
	return &loggedConn{Conn: c, log: l}, nil
}

func (l *connLog) state() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted), l.open
}

func (l *connLog) since(i int) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.accepted[i:])
}

// relayFleet is the cluster with pods whose connections are logged, the
// agent, and the client binary.
type relayFleet struct {
	c         *cluster
	pods      []string
	logs      map[string]*connLog
	client    string
	bootstrap string
	agentBin  string
	agentCfg  string
	agentHTTP string
}

func newRelayFleet(tb testing.TB) *relayFleet {
	c := newCluster(tb, 1)
	rf := &relayFleet{c: c, logs: map[string]*connLog{}}
	for i := range 4 {
		name := fmt.Sprintf("greeter-%d", i)
		p, err := c.fleet.AddPod(context.Background(), name, "")
		if err != nil {
			tb.Fatal(err)
		}
		ln, err := p.Listen("tcp", ":50051")
		if err != nil {
			tb.Fatal(err)
		}
		l := &connLog{Listener: ln}
		serveOn(tb, l, name)
		rf.logs[name] = l
		c.set(name, true, false)
		rf.pods = append(rf.pods, name)
	}
	c.publish()
	dir := tb.TempDir()
	rf.client = filepath.Join(dir, "scale-client")
	build := exec.Command("go", "build", "-o", rf.client, "./cmd/scale-client")
	build.Dir = filepath.Join(repoRoot(tb), "examples")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build scale-client: %v\n%s", err, out)
	}
	rf.agentBin = buildDisco(tb)
	xdsAddr := freePort(tb)
	rf.agentHTTP = freePort(tb)
	rf.agentCfg = filepath.Join(dir, "disco.yaml")
	cfg := fmt.Sprintf("http: {listen: %q}\nsources:\n  k8s: {type: kubernetes, kubeconfig: %q}\nsinks:\n  xds: {type: xds, listen: %q}\npipelines:\n  - source: k8s\n    sinks: [xds]\n",
		rf.agentHTTP, c.cp.Kubeconfig(), xdsAddr)
	if err := os.WriteFile(rf.agentCfg, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	rf.bootstrap = filepath.Join(dir, "bootstrap.json")
	doc := fmt.Sprintf(`{"node": {"id": "scale", "locality": {}}, "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}]}`, xdsAddr)
	if err := os.WriteFile(rf.bootstrap, []byte(doc), 0o644); err != nil {
		tb.Fatal(err)
	}
	return rf
}

// scaleClient is one client process.
type scaleClient struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	mu     sync.Mutex
	events []time.Time
	ready  chan struct{}
	done   chan struct{}
}

func (rf *relayFleet) startClients(tb testing.TB, mode string, n int) []*scaleClient {
	var out []*scaleClient
	for range n {
		cmd := exec.Command(rf.client, "-mode", mode, "-kubeconfig", rf.c.cp.Kubeconfig())
		cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+rf.bootstrap)
		cmd.Stderr = os.Stderr
		c := &scaleClient{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
		var err error
		if c.in, err = cmd.StdinPipe(); err != nil {
			tb.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		go func() {
			defer close(c.done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 1 && f[0] == "started":
					close(c.ready)
				case len(f) == 2 && f[0] == "event":
					ns, _ := strconv.ParseInt(f[1], 10, 64)
					c.mu.Lock()
					c.events = append(c.events, time.Unix(0, ns))
					c.mu.Unlock()
				}
			}
		}()
		out = append(out, c)
	}
	tb.Cleanup(func() { stopClients(out) })
	for _, c := range out {
		select {
		case <-c.ready:
		case <-c.done:
			tb.Fatal("a client exited")
		case <-time.After(2 * time.Minute):
			tb.Fatal("a client never started")
		}
	}
	return out
}

func stopClients(cs []*scaleClient) {
	for _, c := range cs {
		if c.cmd.ProcessState == nil {
			c.in.Close()
		}
	}
	for _, c := range cs {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Wait()
		}
	}
}

func (c *scaleClient) eventsSince(at time.Time) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, e := range c.events {
		if !e.Before(at) {
			out = append(out, e)
		}
	}
	return out
}

// apiCost is what the API server's metrics say of EndpointSlice watches.
type apiCost struct {
	watches    float64 // open watches of endpointslices
	watchBytes float64 // bytes of the events sent on them, so far
	cpu        float64 // the process's CPU seconds, so far
}

func (rf *relayFleet) apiCost(tb testing.TB) apiCost {
	m := scrapeAPIServer(tb, rf.c.cp)
	sliceLabel := `resource="endpointslices"`
	return apiCost{
		watches:    m.sum("apiserver_longrunning_requests", sliceLabel, `verb="WATCH"`),
		watchBytes: m.sum("apiserver_watch_events_sizes_sum", sliceLabel),
		cpu:        m.sum("process_cpu_seconds_total"),
	}
}

// relayFigures are one run's figures.
type relayFigures struct {
	watches             float64
	kbPer100, cpuPer100 float64 // API server: watch bytes and CPU per 100 changes
	p50, p99            time.Duration
	clientRSS           float64 // MiB, mean over the clients
	clientCPU           float64 // ms per client per change
}

// runRelay runs n clients of mode through changes EndpointSlice changes
// (changes/2 pods not ready, then ready again), waiting each time until
// every client has seen it: a client that misses one fails the run. Mode
// "none" is no client: what the API server spends on its own (its own
// watcher of EndpointSlices counts in the bytes sent).
func (rf *relayFleet) runRelay(tb testing.TB, mode string, n, changes int) relayFigures {
	base := rf.apiCost(tb)
	if mode == "xds" {
		a := runAgent(tb, rf.agentBin, rf.agentCfg, rf.agentHTTP)
		a.waitReady()
		defer a.stop()
	}
	clients := rf.startClients(tb, mode, n)
	defer stopClients(clients)
	waitFor := func(what string, cond func() bool) {
		for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				tb.Fatalf("%s %d clients: never %s", mode, n, what)
			}
		}
	}
	if mode != "watch" {
		for _, p := range rf.pods {
			waitFor("connected to every pod", func() bool { _, open := rf.logs[p].state(); return open >= n })
		}
	}
	before := rf.apiCost(tb)
	cpu0 := clientsCPU(clients)
	var lat []time.Duration
	for i := range changes / 2 {
		pod := rf.pods[i%len(rf.pods)]
		log := rf.logs[pod]
		for _, ready := range []bool{false, true} {
			accepted, _ := log.state()
			rf.c.set(pod, ready, false)
			at := time.Now()
			rf.c.publish()
			switch {
			case mode == "none":
				time.Sleep(10 * time.Millisecond)
			case mode == "watch":
				waitFor("saw a change", func() bool {
					for _, c := range clients {
						if len(c.eventsSince(at)) == 0 {
							return false
						}
					}
					return true
				})
				if ready {
					for _, c := range clients {
						lat = append(lat, c.eventsSince(at)[0].Sub(at))
					}
				}
			case !ready:
				waitFor("dropped a pod not ready", func() bool { _, open := log.state(); return open == 0 })
			default:
				waitFor("connected to a pod ready again", func() bool { a, _ := log.state(); return a >= accepted+n })
				for _, t := range log.since(accepted)[:n] {
					lat = append(lat, t.Sub(at))
				}
			}
		}
	}
	after := rf.apiCost(tb)
	cpu := clientsCPU(clients) - cpu0
	var rssSum float64
	for _, c := range clients {
		rssSum += float64(rss(tb, c.cmd.Process.Pid)) / (1 << 20)
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		lat = []time.Duration{0}
	}
	scale := 100 / float64(changes)
	return relayFigures{
		clientCPU: float64(cpu.Microseconds()) / 1000 / float64(max(n, 1)*changes),
		watches:   after.watches - base.watches,
		kbPer100:  (after.watchBytes - before.watchBytes) * scale / 1024,
		cpuPer100: (after.cpu - before.cpu) * scale,
		p50:       lat[len(lat)/2],
		p99:       lat[len(lat)*99/100],
		clientRSS: rssSum / float64(max(n, 1)),
	}
}

// clientsCPU is the CPU time the clients' processes used so far.
func clientsCPU(cs []*scaleClient) time.Duration {
	var ticks int64
	for _, c := range cs {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// After the command's name in parentheses: utime and stime are the
		// 12th and 13th fields, in clock ticks (100 a second).
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func BenchmarkRelay(b *testing.B) {
	rf := newRelayFleet(b)
	b.Run("clients=0/none", func(b *testing.B) {
		var f relayFigures
		for range b.N {
			f = rf.runRelay(b, "none", 0, 100)
		}
		b.ReportMetric(f.kbPer100, "apiserver-KiB-sent/100-changes")
		b.ReportMetric(f.cpuPer100, "apiserver-cpu-s/100-changes")
	})
	for _, n := range []int{50, 200} {
		for _, mode := range []string{"resolver", "xds", "watch"} {
			b.Run(fmt.Sprintf("clients=%d/%s", n, mode), func(b *testing.B) {
				var f relayFigures
				for range b.N {
					f = rf.runRelay(b, mode, n, 100)
				}
				b.ReportMetric(f.watches, "apiserver-watches")
				b.ReportMetric(f.kbPer100, "apiserver-KiB-sent/100-changes")
				b.ReportMetric(f.cpuPer100, "apiserver-cpu-s/100-changes")
				b.ReportMetric(float64(f.p50.Microseconds())/1000, "ms-p50-client-sees")
				b.ReportMetric(float64(f.p99.Microseconds())/1000, "ms-p99-client-sees")
				b.ReportMetric(f.clientRSS, "MiB-rss/client")
				b.ReportMetric(f.clientCPU, "ms-cpu/client/change")
			})
		}
	}
}

// The short version for make test: 5 clients of each kind follow 6
// changes, every one of them seeing every change (a client that misses one
// fails the run); the relay holds one watch whatever the clients. No
// timing.
func TestRelayShort(t *testing.T) {
	rf := newRelayFleet(t)
	for _, mode := range []string{"resolver", "xds", "watch"} {
		f := rf.runRelay(t, mode, 5, 6)
		t.Logf("%s: %+v", mode, f)
		if mode == "xds" && f.watches > 2 {
			t.Errorf("through the relay, 5 clients cost %v watches of the API server, want at most 2 (the agent's)", f.watches)
		}
		if mode != "xds" && f.watches < 5 {
			t.Errorf("%s: 5 clients cost %v watches, want at least one each", mode, f.watches)
		}
	}
}
