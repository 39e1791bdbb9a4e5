package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/xds"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

// The xDS sink tested the way its users use it: a disco xDS server over a
// real API server, real pods, and gRPC clients with no disco code in them,
// each its own process: grpc-go (xds:///), Node (@grpc/grpc-js with
// @grpc/grpc-js-xds, from npm) and Python (Debian's python3-grpcio). The
// Node and Python clients are examples/xds/{node,python}; the Go client is
// this test binary run again (goXDSClient). All of them speak the same line
// protocol on stdin and stdout (see examples/xds/python/client.py).

// xdsTarget is the target each client dials. grpc-js uses the target's
// path as the HTTP/2 authority, which must be a valid URL host and port, so
// the Node client names the Service's port by number; the others by name.
func xdsTarget(lang string) string {
	if lang == "node" {
		return "xds:///greeter.demo:50051"
	}
	return "xds:///greeter.demo:grpc"
}

// xdsServer is a disco xDS server as a separate deployment runs it: its own
// Kubernetes source and hub, serving on addr.
type xdsServer struct {
	t      *testing.T
	addr   string
	reg    *prometheus.Registry
	srv    *xds.Server
	cancel context.CancelFunc
	done   chan error
}

// startXDS starts an xDS server for c's API server on addr ("127.0.0.1:0"
// for any port).
func (c *cluster) startXDS(t *testing.T, addr string, opts ...xds.Option) *xdsServer {
	t.Helper()
	src, err := kubernetes.New(c.cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	hub := coretest.Hub(t, src)
	reg := prometheus.NewRegistry()
	srv := must(xds.New(hub, append([]xds.Option{xds.WithRegisterer(reg)}, opts...)...))
	var lis net.Listener
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &xdsServer{t: t, addr: lis.Addr().String(), reg: reg, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- srv.Serve(ctx, lis) }()
	t.Cleanup(x.stop)
	return x
}

// stop stops the server the way a crash or a redeploy does: every stream
// ends. Idempotent.
func (x *xdsServer) stop() {
	if x.cancel == nil {
		return
	}
	x.cancel()
	x.cancel = nil
	if err := <-x.done; err != nil {
		x.t.Errorf("xds Serve: %v", err)
	}
	x.srv.Close()
}

// streams is how many client streams the server has open.
func (x *xdsServer) streams() int { return int(x.metric("disco_xds_streams", "", "")) }

// nacks is how many NACKs the server received.
func (x *xdsServer) nacks() int { return int(x.metric("disco_xds_replies_total", "result", "nack")) }

// assignments is how many ClusterLoadAssignments the clients subscribe to,
// summed over streams.
func (x *xdsServer) assignments() int {
	return int(x.metric("disco_xds_subscriptions", "type", "endpoints"))
}

// metric sums the series of the named metric (those with the label, if
// set).
func (x *xdsServer) metric(name, label, value string) float64 {
	x.t.Helper()
	mfs, err := x.reg.Gather()
	if err != nil {
		x.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			ok := label == ""
			for _, l := range m.Label {
				ok = ok || (l.GetName() == label && l.GetValue() == value)
			}
			if ok {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// bootstrap writes a client bootstrap for x (zone: the client's zone, or
// none) and returns its path.
func (x *xdsServer) bootstrap(t *testing.T, zone string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := (xds.Bootstrap{ServerURI: x.addr, NodeID: "e2e-" + zone, Zone: zone}).Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// xdsClient is one client process.
type xdsClient struct {
	t      *testing.T
	lang   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	exited chan struct{}
}

// clientReport is what a client counted since its last report.
type clientReport struct {
	OK     int            `json:"ok"`
	Failed int            `json:"failed"`
	Per    map[string]int `json:"per"`
	Errors []string       `json:"errors"`
}

// onceResult is one call's outcome.
type onceResult struct {
	OK     bool   `json:"ok"`
	Server string `json:"server"`
	Error  string `json:"error"`
	MS     int    `json:"ms"`
}

var xdsLangs = []string{"go", "node", "python"}

// startXDSClient starts a client in lang dialing target with the bootstrap
// at path.
func startXDSClient(t *testing.T, lang, bootstrap, target string) *xdsClient {
	t.Helper()
	var cmd *exec.Cmd
	env := append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+bootstrap,
		// grpcio 1.51 reads the bootstrap's listener name template (the
		// zone variant) only with federation on; later versions by default.
		"GRPC_EXPERIMENTAL_XDS_FEDERATION=true")
	switch lang {
	case "go":
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		env = append(env, goXDSClientEnv+"="+target)
	case "node":
		modules := npmGRPCXDS(t)
		cmd = exec.Command("node", filepath.Join(repoRoot(t), "examples/xds/node/client.js"), target)
		env = append(env, "NODE_PATH="+modules)
	case "python":
		cmd = exec.Command(pythonWithGRPC(t), filepath.Join(repoRoot(t), "examples/xds/python/client.py"), target)
	default:
		t.Fatalf("no %s client", lang)
	}
	cmd.Env = env
	c := &xdsClient{t: t, lang: lang, cmd: cmd, lines: make(chan string, 16), stderr: &tailBuffer{max: 16 << 10}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	var err error
	if c.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s client: %v", lang, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() { _ = cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		_, _ = io.WriteString(c.in, "quit\n")
		c.in.Close()
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("%s client's stderr (tail):\n%s", lang, c.stderr.String())
		}
	})
	var started struct{ Started bool }
	c.read(&started, time.Minute)
	return c
}

// do sends a command and reads the JSON line that answers it into v.
func (c *xdsClient) do(cmd string, v any) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.t.Fatalf("%s client: %s: %v\nstderr:\n%s", c.lang, cmd, err, c.stderr.String())
	}
	c.read(v, time.Minute)
}

func (c *xdsClient) read(v any, timeout time.Duration) {
	c.t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("%s client exited:\n%s", c.lang, c.stderr.String())
		}
		if err := json.Unmarshal([]byte(line), v); err != nil {
			c.t.Fatalf("%s client said %q: %v", c.lang, line, err)
		}
	case <-time.After(timeout):
		c.t.Fatalf("%s client said nothing for %v:\n%s", c.lang, timeout, c.stderr.String())
	}
}

func (c *xdsClient) load(n int) {
	c.t.Helper()
	var r struct{ Load int }
	c.do(fmt.Sprintf("load %d", n), &r)
}

func (c *xdsClient) report() clientReport {
	c.t.Helper()
	var r clientReport
	c.do("report", &r)
	return r
}

func (c *xdsClient) once() onceResult {
	c.t.Helper()
	var r onceResult
	c.do("once", &r)
	return r
}

// waitServing waits (up to a minute) until every named pod answered the
// client's calls.
func (c *xdsClient) waitServing(names ...string) {
	c.t.Helper()
	seen := map[string]bool{}
	var last onceResult
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		last = c.once()
		if last.OK {
			seen[last.Server] = true
		} else {
			time.Sleep(20 * time.Millisecond)
		}
		all := true
		for _, n := range names {
			all = all && seen[n]
		}
		if all {
			return
		}
	}
	c.t.Fatalf("%s client: %v never all answered (seen %v; last call %+v)", c.lang, names, seen, last)
}

// failsFast waits (up to 30 s) until calls fail, three in a row, each
// without waiting (not running to its 30 s deadline), and returns the last.
func (c *xdsClient) failsFast() onceResult {
	c.t.Helper()
	inRow := 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r := c.once()
		if r.OK {
			inRow = 0
			continue
		}
		if r.MS > 5000 || !strings.HasPrefix(r.Error, "UNAVAILABLE") {
			c.t.Fatalf("%s client: call failed after %d ms with %q: want a fast UNAVAILABLE", c.lang, r.MS, r.Error)
		}
		if inRow++; inRow == 3 {
			return r
		}
	}
	c.t.Fatalf("%s client: calls still succeed", c.lang)
	return onceResult{}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// npmGRPCXDS installs grpc-js and grpc-js-xds (pinned) once.
func npmGRPCXDS(t *testing.T) string {
	return npmInstall(t, "npm-grpc-js-xds-1.14.1", "@grpc/grpc-js@1.14.7", "@grpc/grpc-js-xds@1.14.1")
}

// pythonWithGRPC returns a python3 that can import grpc (Debian's
// python3-grpcio); without one the test skips, unless
// DISCO_REQUIRE_PYTHON=1 (CI).
func pythonWithGRPC(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(py, "-c", "import grpc").Run(); err == nil {
			return py
		}
	}
	if os.Getenv("DISCO_REQUIRE_PYTHON") == "1" {
		t.Fatal("no python3 with grpc (DISCO_REQUIRE_PYTHON=1): apt-get install -y python3-grpcio python3-protobuf")
	}
	t.Skip("no python3 with grpc: apt-get install -y python3-grpcio python3-protobuf")
	return ""
}

// clients is one client per language, all dialing the greeter Service.
type clients []*xdsClient

func startClients(t *testing.T, bootstrap string) clients {
	t.Helper()
	cs := make(clients, len(xdsLangs))
	var wg sync.WaitGroup
	// Installs and skips first, not from the goroutines below.
	npmGRPCXDS(t)
	pythonWithGRPC(t)
	for i, lang := range xdsLangs {
		wg.Go(func() { cs[i] = startXDSClient(t, lang, bootstrap, xdsTarget(lang)) })
	}
	wg.Wait()
	for _, c := range cs {
		if c == nil {
			t.FailNow()
		}
	}
	return cs
}

func (cs clients) each(f func(c *xdsClient)) {
	for _, c := range cs {
		f(c)
	}
}

func (cs clients) load(n int) { cs.each(func(c *xdsClient) { c.load(n) }) }

func (cs clients) waitServing(names ...string) {
	cs.each(func(c *xdsClient) { c.waitServing(names...) })
}

// noneFailed reads every client's report and fails the test if any call
// failed; it returns the reports by language.
func (cs clients) noneFailed(t *testing.T, what string) map[string]clientReport {
	t.Helper()
	reports := map[string]clientReport{}
	for _, c := range cs {
		r := c.report()
		reports[c.lang] = r
		t.Logf("%s, %s: %d calls, %d failed; per pod %v", what, c.lang, r.OK+r.Failed, r.Failed, r.Per)
		if r.Failed != 0 {
			t.Errorf("%s, %s: %d calls failed, want 0: %v", what, c.lang, r.Failed, r.Errors)
		}
		if r.OK == 0 {
			t.Errorf("%s, %s: no call made", what, c.lang)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return reports
}

// Every scenario a client relies on, each with a Go, a Node and a Python
// client under load, none with a line of disco code: a rolling restart, the
// terminating fallback, scaling to zero and back, a deleted Service, zone
// preference, the xDS server restarted, and a resource unsubscribed and
// subscribed again on one ADS stream.
func TestXDSClientsInThreeLanguages(t *testing.T) {
	top := t
	c := newCluster(t, 1)
	x := c.startXDS(t, "127.0.0.1:0")
	cs := startClients(t, x.bootstrap(t, ""))
	names := c.startReady("greeter", 0, 3, "")
	cs.waitServing(names...)
	cs.load(4)
	time.Sleep(500 * time.Millisecond)
	cs.noneFailed(t, "steady")
	// The server had every client on one stream, and nothing was NACKed.
	if n := x.streams(); n != len(cs) {
		t.Fatalf("%d streams for %d clients", n, len(cs))
	}

	t.Run("rolling restart", func(t *testing.T) {
		for i, old := range names {
			c.startReady("greeter-new", i, 1, "")
			c.drain(old, time.Second)
		}
		names = c.fleet.Names()
		time.Sleep(500 * time.Millisecond)
		reports := cs.noneFailed(t, "rolling restart of 3 pods")
		for lang, r := range reports {
			for _, n := range names {
				if r.Per[n] == 0 {
					t.Errorf("%s: new pod %s got no call", lang, n)
				}
			}
		}
	})

	t.Run("terminating fallback", func(t *testing.T) {
		// Every pod terminating but still serving: with none ready, they
		// carry the calls.
		for _, n := range names {
			c.set(n, false, true)
		}
		c.publish()
		time.Sleep(time.Second)
		cs.noneFailed(t, "every pod terminating, serving")
		for _, n := range names {
			c.set(n, true, false)
		}
		c.publish()
	})

	t.Run("scale to zero and back", func(t *testing.T) {
		cs.load(0)
		cs.each(func(c *xdsClient) { c.report() })
		// Every pod drained at once (Python's grpcio keeps an idle
		// connection open for 6 s after a graceful stop's GOAWAY).
		errs := make(chan error, len(names))
		for _, n := range names {
			c.mu.Lock()
			g := c.pods[n]
			c.mu.Unlock()
			go func() { errs <- c.fleet.Drain(context.Background(), n, 0, g.gs.GracefulStop) }()
		}
		for range names {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		cs.each(func(cl *xdsClient) {
			r := cl.failsFast()
			t.Logf("no endpoints, %s: a call fails in %d ms: %s", cl.lang, r.MS, r.Error)
		})
		names = c.startReady("greeter-back", 0, 2, "")
		cs.waitServing(names...)
		cs.load(4)
		time.Sleep(500 * time.Millisecond)
		cs.noneFailed(t, "scaled back to 2")
	})

	t.Run("deleted Service", func(t *testing.T) {
		cs.load(0)
		cs.each(func(c *xdsClient) { c.report() })
		admin, err := c.cp.AdminClient()
		if err != nil {
			t.Fatal(err)
		}
		ctx := ctxFor(t, time.Minute)
		svc, err := admin.CoreV1().Services("demo").Get(ctx, "greeter", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.CoreV1().Services("demo").Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		cs.each(func(cl *xdsClient) {
			r := cl.failsFast()
			t.Logf("deleted Service, %s: a call fails in %d ms: %s", cl.lang, r.MS, r.Error)
		})
		// The Service comes back: the same clients recover.
		if _, err := admin.CoreV1().Services("demo").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "greeter"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: svc.Spec.Ports},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cs.waitServing(names...)
		cs.load(4)
		time.Sleep(500 * time.Millisecond)
		cs.noneFailed(t, "Service back")
	})

	t.Run("xDS server restarted", func(t *testing.T) {
		before := x.streams()
		x.stop()
		// The clients keep their last endpoints: not one call fails while
		// the server is gone.
		time.Sleep(2 * time.Second)
		cs.noneFailed(t, "xDS server down")
		x = c.startXDS(top, x.addr) // until the whole test ends
		waitFor(t, time.Minute, "every client back on the new server", func() bool { return x.streams() == before })
		// They resync: a pod added now reaches them all.
		added := c.startReady("greeter-after", 0, 1, "")
		cs.waitServing(added...)
		c.drain(names[0], time.Second)
		names = append(names[1:], added...)
		time.Sleep(500 * time.Millisecond)
		cs.noneFailed(t, "after the xDS server restarted")
	})

	t.Run("resubscribe on one stream", func(t *testing.T) {
		// A client closes its channel to the target (it unsubscribes from
		// the target's resources) and dials it again (it subscribes again):
		// the resources must come back at once, not after a client's 15 s
		// does-not-exist timer. Node and Python share one xDS client (one
		// ADS stream) per process: a second channel, to another target, keeps
		// that stream up, so both happen on one stream. grpc-go has an xDS
		// client per channel target, so the last channel of a target closing
		// ends its stream; the one-stream case for grpc-go's request pattern
		// is TestUnsubscribeThenResubscribeOnOneStream in sinks/xds.
		cs.load(0)
		cs.each(func(c *xdsClient) { c.report() })
		for _, cl := range cs {
			oneStream := cl.lang != "go"
			if oneStream {
				var kept struct{ Kept bool }
				cl.do("keep xds:///other.demo:grpc", &kept)
			}
			streams, subs := x.streams(), x.assignments()
			var redialed struct{ Redialed bool }
			cl.do("redial", &redialed)
			waitFor(t, 10*time.Second, cl.lang+": unsubscribed", func() bool { return x.assignments() == subs-1 })
			r := cl.once()
			if !r.OK || r.MS > 5000 {
				t.Errorf("%s: the first call after resubscribing: %+v, want a success within 5 s", cl.lang, r)
			}
			waitFor(t, 10*time.Second, cl.lang+": subscribed again", func() bool { return x.assignments() == subs })
			if n := x.streams(); oneStream && n != streams {
				t.Errorf("%s: streams %d -> %d: the resubscription was not on the same stream", cl.lang, streams, n)
			}
			t.Logf("%s: unsubscribed and subscribed again (one stream: %v), first call in %d ms", cl.lang, oneStream, r.MS)
		}
	})

	if n := x.nacks(); n != 0 {
		t.Fatalf("%d NACKs", n)
	}
}

// Zone preference: clients whose bootstrap names zone-a call only zone-a's
// pods while it has ready ones, and fail over to zone-b, without a failed
// call, when zone-a's pods go away.
func TestXDSClientsPreferTheirZone(t *testing.T) {
	c := newCluster(t, 1)
	x := c.startXDS(t, "127.0.0.1:0")
	cs := startClients(t, x.bootstrap(t, "zone-a"))
	a := c.startReady("a", 0, 2, "zone-a")
	b := c.startReady("b", 0, 2, "zone-b")
	cs.waitServing(a...)
	cs.load(4)
	time.Sleep(time.Second)
	for lang, r := range cs.noneFailed(t, "zone-a clients, zone-a ready") {
		if r.Per[b[0]]+r.Per[b[1]] != 0 || r.Per[a[0]] == 0 || r.Per[a[1]] == 0 {
			t.Errorf("%s: calls %v, want zone-a's pods only", lang, r.Per)
		}
	}
	for _, n := range a {
		c.drain(n, time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	cs.noneFailed(t, "zone-a drained")
	time.Sleep(500 * time.Millisecond)
	for lang, r := range cs.noneFailed(t, "zone-a clients, zone-a gone") {
		if r.Per[b[0]] == 0 || r.Per[b[1]] == 0 {
			t.Errorf("%s: calls %v, want zone-b's pods", lang, r.Per)
		}
	}
	if n := x.nacks(); n != 0 {
		t.Fatalf("%d NACKs", n)
	}
}

// Subsetting with clients in three languages: a server giving each client
// that names itself 2 of 6 pods gives each of the 3 clients (Go, Node,
// Python, each with a client id in its bootstrap) 2 pods of its own, every
// pod exactly one client; a rollout step (a pod drained, a new one ready)
// changes subsets without a failed call, and ends balanced again.
func TestXDSClientsInThreeLanguagesKeepTheirSubsets(t *testing.T) {
	c := newCluster(t, 1)
	x := c.startXDS(t, "127.0.0.1:0", xds.WithSubsetSize(func(core.Target) int { return 2 }))
	pods := c.startReady("s", 0, 6, "")
	npmGRPCXDS(t)
	pythonWithGRPC(t)
	cs := make(clients, len(xdsLangs))
	for i, lang := range xdsLangs {
		path := filepath.Join(t.TempDir(), "bootstrap.json")
		if err := (xds.Bootstrap{ServerURI: x.addr, NodeID: "e2e-" + lang, Client: "client-" + lang}).Write(path); err != nil {
			t.Fatal(err)
		}
		// One target for all three (Node needs the port by number), so
		// that one assignment balances them.
		cs[i] = startXDSClient(t, lang, path, "xds:///greeter.demo:50051")
	}
	cs.load(4)
	// balanced waits until each client calls exactly 2 pods and the three
	// subsets cover ready, each pod once, and returns the subsets.
	balanced := func(what string, ready []string) map[string][]string {
		t.Helper()
		var subsets map[string][]string
		for deadline := time.Now().Add(time.Minute); ; {
			time.Sleep(700 * time.Millisecond)
			cs.noneFailed(t, what+", settling") // what was counted while it settled
			time.Sleep(700 * time.Millisecond)
			subsets = map[string][]string{}
			clientsOf := map[string]int{}
			for lang, r := range cs.noneFailed(t, what) {
				for pod, n := range r.Per {
					if n > 0 {
						subsets[lang] = append(subsets[lang], pod)
						clientsOf[pod]++
					}
				}
				slices.Sort(subsets[lang])
			}
			ok := len(clientsOf) == len(ready)
			for _, p := range ready {
				ok = ok && clientsOf[p] == 1
			}
			for _, lang := range xdsLangs {
				ok = ok && len(subsets[lang]) == 2
			}
			if ok {
				t.Logf("%s: subsets %v", what, subsets)
				return subsets
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: subsets %v, want 2 pods each, every one of %v once", what, subsets, ready)
			}
		}
	}
	before := balanced("6 pods", pods)
	// A rollout step: the first client's first pod drained, a new one ready.
	gone := before[xdsLangs[0]][0]
	c.drain(gone, time.Second)
	fresh := c.startReady("s", 6, 1, "")
	ready := append(slices.DeleteFunc(slices.Clone(pods), func(p string) bool { return p == gone }), fresh...)
	after := balanced("a pod replaced", ready)
	moved := 0
	for _, lang := range xdsLangs {
		for _, p := range after[lang] {
			if !slices.Contains(before[lang], p) {
				moved++
			}
		}
	}
	if moved > 2 {
		t.Errorf("subsets %v then %v: %d connections moved for one pod replaced, want at most 2", before, after, moved)
	}
	if n := x.nacks(); n != 0 {
		t.Fatalf("%d NACKs", n)
	}
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
	}
}
