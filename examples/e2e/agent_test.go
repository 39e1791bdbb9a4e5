package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/webhook"
)

// The agent as its users run it: the disco binary (core/agent/cmd/disco)
// from a config file, against a real API server and pods.

// buildDisco builds the default distribution once per test.
func buildDisco(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "disco")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(repoRoot(t), "core/agent/cmd/disco")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build disco: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback address nothing listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// agentProcess is disco run.
type agentProcess struct {
	t      testing.TB
	cmd    *exec.Cmd
	http   string
	log    *tailBuffer
	exited chan error
}

func runAgent(t testing.TB, bin, config, httpAddr string, env ...string) *agentProcess {
	t.Helper()
	p := &agentProcess{t: t, cmd: exec.Command(bin, "run", "-config", config), http: httpAddr, log: &tailBuffer{max: 1 << 20}, exited: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr, p.cmd.Stdout = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("agent log (tail):\n%s", lastLines(p.log.String(), 60))
		}
	})
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// get returns the status and body of a GET of the agent's path.
func (p *agentProcess) get(path string) (int, string) {
	res, err := http.Get("http://" + p.http + path)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (p *agentProcess) waitReady() {
	p.t.Helper()
	var code int
	var body string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-p.exited:
			p.t.Fatalf("the agent exited: %v\n%s", err, p.log.String())
		default:
		}
		if code, body = p.get("/readyz"); code == 200 {
			return
		}
	}
	p.t.Fatalf("the agent never got ready: %d %s", code, body)
}

func (p *agentProcess) reload() (int, map[string]any) {
	p.t.Helper()
	res, err := http.Post("http://"+p.http+"/-/reload", "", nil)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// receiver is a webhook receiver whose secret can be swapped, recording
// the updates it verified.
type receiver struct {
	srv     *httptest.Server
	current atomic.Pointer[webhook.Receiver]
	delay   atomic.Int64 // nanoseconds each delivery takes
	mu      sync.Mutex
	got     []core.Update
	arrived atomic.Int64 // deliveries received
	done    atomic.Int64 // deliveries answered
}

func newReceiver(t testing.TB, secret string) *receiver {
	r := &receiver{}
	r.use(t, secret)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.arrived.Add(1)
		if d := r.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		r.current.Load().ServeHTTP(w, req)
		r.done.Add(1)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) use(t testing.TB, secret string) {
	rec, err := webhook.NewReceiver(func(_ context.Context, u core.Update) error {
		r.mu.Lock()
		r.got = append(r.got, u)
		r.mu.Unlock()
		return nil
	}, []string{secret})
	if err != nil {
		t.Fatal(err)
	}
	r.current.Store(rec)
}

// last is the newest update of target the receiver verified.
func (r *receiver) last(target string) (core.Update, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last core.Update
	n := 0
	for _, u := range r.got {
		if u.Target.String() == target {
			last = u
			n++
		}
	}
	return last, n
}

func endpointsOf(s core.Set) []string {
	var out []string
	for e := range s.All() {
		out = append(out, e.HostPort())
	}
	return out
}

// nodeSinkLines reads node-log-sink's file: the newest line per target,
// and how many lines each target has.
func nodeSinkLines(t *testing.T, path string) (map[string][]string, map[string]int) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	last, count := map[string][]string{}, map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct {
			Target    string   `json:"target"`
			Endpoints []string `json:"endpoints"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			last[l.Target], count[l.Target] = l.Endpoints, count[l.Target]+1
		}
	}
	return last, count
}

// podAddrs is the address:port of each named pod.
func (c *cluster) podAddrs(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, c.fleet.Pod(n).Addr(50051))
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return true
}

// stop sends SIGTERM and waits for a clean exit.
func (p *agentProcess) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.exited; err != nil {
		p.t.Fatalf("the agent exited with %v after SIGTERM", err)
	}
}

const agentConfig = `# disco agent, end-to-end test
http: {listen: "{{HTTP}}", enable_lifecycle: true}
reload: {interval: 100ms, settle: 50ms}
shutdown: {drain: 20s}
sources:
  k8s:
    type: kubernetes
    kubeconfig: "{{KUBECONFIG}}"
  files:
    type: file
    path: "{{FILES}}"
sinks:
  xds:
    type: xds
    listen: "{{XDS}}"
  hooks:
    type: webhook
    url: "{{HOOK}}"
    secrets: ["${DISCO_E2E_SECRET_A}"]
    timeout: 30s
  node:
    type: plugin
    path: "{{NODE}}"
    args: ["{{NODEOUT}}"]
pipelines:
  - source: k8s
    sinks: [xds]
  - source: k8s
    targets: [greeter.demo:grpc]
    sinks: [hooks, node]
  - source: files
    targets: [static]
    sinks: [node]
`

// One agent feeds a grpc-go xDS client, a webhook receiver and a Node sink
// plugin from the API server at once; a rolling restart fails no call and
// reaches all three; reloads add a target (nothing else moves), change a
// webhook secret, are refused when invalid (nothing changes, the error
// names the line), and remove a source; SIGTERM lets a delivery in flight
// finish.
func TestAgentEndToEnd(t *testing.T) {
	c := newCluster(t, 1)
	bin := buildDisco(t)
	modules := npmInstall(t, "npm-grpc-js-1.14.7", "@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1")
	dir := t.TempDir()
	nodeBin := filepath.Join(dir, "node-log-sink")
	script := filepath.Join(repoRoot(t), "examples/plugins/node-log-sink/index.js")
	if err := os.WriteFile(nodeBin, []byte(fmt.Sprintf("#!/bin/sh\nNODE_PATH=%q exec node %q \"$@\"\n", modules, script)), 0o755); err != nil {
		t.Fatal(err)
	}
	nodeOut := filepath.Join(dir, "node-sink.jsonl")
	files := filepath.Join(dir, "targets")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "static.yaml"), []byte("targets:\n  - target: static\n    endpoints: [10.9.9.9:80]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secretA, secretB := must(webhook.NewSecret()), must(webhook.NewSecret())
	recv := newReceiver(t, secretA.Text())
	httpAddr, xdsAddr := freePort(t), freePort(t)
	config := strings.NewReplacer("{{HTTP}}", httpAddr, "{{KUBECONFIG}}", c.cp.Kubeconfig(), "{{FILES}}", files, "{{XDS}}", xdsAddr,
		"{{HOOK}}", recv.srv.URL, "{{NODE}}", nodeBin, "{{NODEOUT}}", nodeOut).Replace(agentConfig)
	path := filepath.Join(dir, "disco.yaml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write(config)
	secretEnv := []string{"DISCO_E2E_SECRET_A=" + secretA.Text(), "DISCO_E2E_SECRET_B=" + secretB.Text()}
	validate := exec.Command(bin, "validate", "-config", path)
	validate.Env = append(os.Environ(), secretEnv...)
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("disco validate: %v\n%s", err, out)
	}

	names := c.startReady("greeter", 0, 3, "")
	agent := runAgent(t, bin, path, httpAddr, secretEnv...)
	agent.waitReady()

	// The xDS client, under load.
	bs := filepath.Join(dir, "bootstrap.json")
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "sinks: plugin, webhook, xds") {
		t.Fatalf("disco version: %v %s", err, out)
	}
	writeBootstrap(t, bs, xdsAddr)
	// The gRPC health service on the xDS port.
	hcc := dial(t, xdsAddr)
	if hr, err := healthpb.NewHealthClient(hcc).Check(ctxFor(t, 10*time.Second), &healthpb.HealthCheckRequest{}); err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health on the xDS port: %v %v", hr, err)
	}
	client := startXDSClient(t, "go", bs, xdsTarget("go"))
	client.waitServing(names...)
	client.load(4)

	// A rolling restart: no call fails, every sink follows.
	for i, old := range names {
		c.startReady("greeter-new", i, 1, "")
		c.drain(old, time.Second)
	}
	names = c.fleet.Names()
	want := c.podAddrs(names...)
	time.Sleep(500 * time.Millisecond)
	if r := client.report(); r.Failed != 0 || r.OK == 0 {
		t.Fatalf("rolling restart through the agent: %d calls, %d failed: %v", r.OK+r.Failed, r.Failed, r.Errors)
	} else {
		t.Logf("rolling restart through the agent's xDS server: %d calls, 0 failed; per pod %v", r.OK, r.Per)
	}
	waitFor(t, 20*time.Second, "the webhook receiver has the new pods", func() bool {
		u, _ := recv.last("demo/greeter:grpc")
		return sameSet(endpointsOf(u.State.Endpoints), want)
	})
	waitFor(t, 20*time.Second, "the Node sink has the new pods", func() bool {
		last, _ := nodeSinkLines(t, nodeOut)
		return sameSet(last["demo/greeter:grpc"], want)
	})
	if last, _ := nodeSinkLines(t, nodeOut); !sameSet(last["static"], []string{"10.9.9.9:80"}) {
		t.Fatalf("the Node sink lacks the file source's target: %v", last)
	}

	// Reload: a target added. Nothing else moves: no delivery of the
	// unchanged target, no line in the Node sink for it, the xDS client
	// untouched.
	_, hooksBefore := recv.last("demo/greeter:grpc")
	_, nodeBefore := nodeSinkLines(t, nodeOut)
	write(strings.Replace(config, "targets: [greeter.demo:grpc]", "targets: [greeter.demo:grpc, greeter.demo:50051]", 1))
	waitFor(t, 20*time.Second, "the added target reaches the Node sink", func() bool {
		last, _ := nodeSinkLines(t, nodeOut)
		return sameSet(last["demo/greeter:50051"], want)
	})
	time.Sleep(time.Second)
	if _, n := recv.last("demo/greeter:grpc"); n != hooksBefore {
		t.Fatalf("adding a target re-delivered the unchanged one to the webhook (%d -> %d deliveries)", hooksBefore, n)
	}
	if _, count := nodeSinkLines(t, nodeOut); count["demo/greeter:grpc"] != nodeBefore["demo/greeter:grpc"] {
		t.Fatalf("adding a target re-sent the unchanged one to the Node sink (%d -> %d)", nodeBefore["demo/greeter:grpc"], count["demo/greeter:grpc"])
	}
	if r := client.report(); r.Failed != 0 {
		t.Fatalf("calls failed across the reload: %v", r.Errors)
	}

	// Reload: the webhook's secret changes (the receiver now takes only the
	// new one); the sender restarts and delivers, signed with it.
	recv.use(t, secretB.Text())
	config = strings.Replace(config, "targets: [greeter.demo:grpc]", "targets: [greeter.demo:grpc, greeter.demo:50051]", 1)
	config = strings.Replace(config, "${DISCO_E2E_SECRET_A}", "${DISCO_E2E_SECRET_B}", 1)
	write(config)
	_, before := recv.last("demo/greeter:grpc")
	waitFor(t, 20*time.Second, "a delivery signed with the new secret", func() bool {
		_, n := recv.last("demo/greeter:grpc")
		return n > before
	})

	// Reload: an invalid file. Nothing changes; the error names the line.
	bad := strings.Replace(config, "    timeout: 30s", "    timeout: 30s\n    retries: 3", 1)
	write(bad)
	code, res := agent.reload()
	line := strings.Count(bad[:strings.Index(bad, "retries")], "\n") + 1
	if msg, _ := res["error"].(string); code != 400 || !strings.Contains(msg, fmt.Sprintf("disco.yaml:%d: sinks.hooks.retries: unknown key", line)) {
		t.Fatalf("an invalid reload: %d %v", code, res)
	}
	if code, body := agent.get("/readyz"); code != 200 {
		t.Fatalf("an invalid reload broke the agent: %d %s", code, body)
	}
	if _, body := agent.get("/"); !strings.Contains(body, "sinks.hooks.retries: unknown key") {
		t.Fatal("the status page does not show the failed reload")
	}
	if r := client.report(); r.Failed != 0 {
		t.Fatalf("calls failed across the invalid reload: %v", r.Errors)
	}

	// Reload: a source removed, with its pipeline.
	config = strings.Replace(config, "  files:\n    type: file\n    path: \""+files+"\"\n", "", 1)
	config = strings.Replace(config, "  - source: files\n    targets: [static]\n    sinks: [node]\n", "", 1)
	write(config)
	waitFor(t, 20*time.Second, "the removed source is gone", func() bool {
		_, body := agent.get("/api/targets")
		return !strings.Contains(body, `"source": "files"`) && strings.Contains(body, `"source": "k8s"`)
	})
	// The targets leave the status page when their attachments close, a
	// moment before the source itself has stopped and says so.
	waitFor(t, 10*time.Second, "a log line for the removed source", func() bool {
		return strings.Contains(agent.log.String(), `"msg":"agent: source stopped","source":"files"`)
	})

	// No secret anywhere a user looks: the logs, the status page, its JSON,
	// the metrics.
	pages := agent.log.String()
	for _, p := range []string{"/", "/api/targets", "/metrics", "/readyz"} {
		_, body := agent.get(p)
		pages += body
	}
	for _, secret := range []string{secretA.Text(), secretB.Text(), strings.TrimPrefix(secretA.Text(), "whsec_")} {
		if strings.Contains(pages, secret) {
			t.Fatal("a webhook secret shows in the logs or a page")
		}
	}

	// SIGTERM with a delivery in flight: the receiver takes 2 s; the agent
	// waits for it (drain 20 s) and exits 0.
	client.load(0)
	recv.delay.Store(int64(2 * time.Second))
	arrived, done := recv.arrived.Load(), recv.done.Load()
	c.startReady("greeter-late", 0, 1, "")
	waitFor(t, 10*time.Second, "a delivery in flight", func() bool { return recv.arrived.Load() > arrived })
	began := time.Now()
	if err := agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-agent.exited:
		if err != nil {
			t.Fatalf("the agent exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not exit within 30 s of SIGTERM")
	}
	if recv.done.Load() <= done {
		t.Fatal("the delivery in flight at SIGTERM did not finish")
	}
	t.Logf("SIGTERM with a delivery in flight: exited 0 after %v, the delivery done", time.Since(began).Round(time.Millisecond))
}

// writeBootstrap writes an xDS client bootstrap naming addr.
func writeBootstrap(t *testing.T, path, addr string) {
	t.Helper()
	doc := fmt.Sprintf(`{"node": {"id": "agent-e2e", "locality": {}}, "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}]}`, addr)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Bad input, each one clear line naming what was wrong: a config error
// (file, line, key), a missing plugin binary, a port in use (HTTP and
// xDS), an unreadable config file.
func TestAgentBadInput(t *testing.T) {
	bin := buildDisco(t)
	dir := t.TempDir()
	files := filepath.Join(dir, "targets")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	good := fmt.Sprintf(`http: {listen: "{{HTTP}}"}
sources:
  files: {type: file, path: %q}
sinks:
  xds: {type: xds, listen: "{{XDS}}"}
pipelines:
  - {source: files, sinks: [xds]}
`, files)
	cfg := func(name, httpAddr, xdsAddr, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.NewReplacer("{{HTTP}}", httpAddr, "{{XDS}}", xdsAddr).Replace(text)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	run := func(args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"a config error", []string{"validate", "-config", cfg("typo.yaml", "127.0.0.1:0", "127.0.0.1:0", strings.Replace(good, "path:", "pth:", 1))},
			"typo.yaml:3: sources.files.pth: unknown key (known: path, interval, settle, grace, max_size, default_port)"},
		{"a missing plugin binary", []string{"validate", "-config", cfg("plugin.yaml", "127.0.0.1:0", "127.0.0.1:0", strings.Replace(good, "  files: {type: file, path:", "  p: {type: plugin, path: /nonexistent/plugin}\n  files: {type: file, path:", 1))},
			"plugin.yaml:3: sources.p: path: plugin binary /nonexistent/plugin: stat /nonexistent/plugin: no such file or directory"},
		{"the HTTP port in use", []string{"run", "-config", cfg("http.yaml", busy.Addr().String(), "127.0.0.1:0", good)},
			"disco: http.listen " + busy.Addr().String() + ": listen tcp " + busy.Addr().String() + ": bind: address already in use"},
		{"the xDS port in use", []string{"run", "-config", cfg("xds.yaml", "127.0.0.1:0", busy.Addr().String(), good)},
			"disco: xds <- files: xds xds: listen: listen tcp " + busy.Addr().String() + ": bind: address already in use"},
		{"an unreadable config file", []string{"run", "-config", dir},
			"config " + dir + ": read " + dir + ": is a directory"},
		{"no config file", []string{"validate", "-config", filepath.Join(dir, "none.yaml")},
			"config " + filepath.Join(dir, "none.yaml") + ": open " + filepath.Join(dir, "none.yaml") + ": no such file or directory"},
	} {
		code, out := run(c.args...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, output:\n%s\nwant exit 1 and %q", c.name, code, out, c.want)
		}
		if strings.Contains(out, "goroutine ") || strings.Contains(out, ".go:") && !strings.Contains(out, `"caller"`) {
			t.Errorf("%s: a stack trace:\n%s", c.name, out)
		}
	}
}
