package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	k8s "k8s.io/client-go/kubernetes"

	"github.com/disco-lb/disco/sinks/webhook"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// The agent's figures (core/agent/BENCHMARKS.md), with the real binary
// against a real API server:
//
//	go test -run '^$' -bench BenchmarkAgent -benchtime 5x ./e2e

// services creates n headless Services svc-0..svc-(n-1) in namespace
// bench, each with a slice of one endpoint (no pods: the agent only reads),
// and returns them as targets.
func services(b *testing.B, cs k8s.Interface, n int) []string {
	scaleServices(b, cs, "bench", slices.Repeat([]int{1}, n))
	targets := make([]string, n)
	for i := range targets {
		targets[i] = fmt.Sprintf("svc-%d.bench:http", i)
	}
	return targets
}

// agentBench is a config of n targets of the API server, delivered to a
// webhook receiver.
type agentBench struct {
	bin, path, httpAddr string
	secret              string
	recv                *receiver
	env                 []string
	targets             []string
	kubeconfig          string
}

func newAgentBench(b *testing.B, n int) *agentBench {
	cp := kubetest.New(b)
	cs, err := cp.AdminClient()
	if err != nil {
		b.Fatal(err)
	}
	ab := &agentBench{bin: buildDisco(b), targets: services(b, cs, n), kubeconfig: cp.Kubeconfig()}
	secret := must(webhook.NewSecret())
	ab.secret = secret.Text()
	ab.recv = newReceiver(b, ab.secret)
	ab.env = []string{"SECRET=" + ab.secret}
	ab.path = filepath.Join(b.TempDir(), "disco.yaml")
	return ab
}

func (ab *agentBench) write(b *testing.B, targets []string) {
	if ab.httpAddr == "" {
		ab.httpAddr = freePort(b)
	}
	text := fmt.Sprintf("http: {listen: %q, enable_lifecycle: true}\nreload: {interval: 1h}\nsources:\n  k8s: {type: kubernetes, kubeconfig: %q}\nsinks:\n  hooks: {type: webhook, url: %q, secrets: [\"${SECRET}\"]}\npipelines:\n  - source: k8s\n    sinks: [hooks]\n    targets: [%s]\n",
		ab.httpAddr, ab.kubeconfig, ab.recv.srv.URL, strings.Join(targets, ", "))
	if err := os.WriteFile(ab.path, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
}

// rss is a process's resident memory, from /proc.
func rss(tb testing.TB, pid int) int64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkAgentStartToReady: from exec to /readyz answering 200 with 100
// targets (list and watch of 100 Services, 100 webhook subscriptions).
func BenchmarkAgentStartToReady(b *testing.B) {
	ab := newAgentBench(b, 100)
	for b.Loop() {
		ab.write(b, ab.targets)
		a := runAgent(b, ab.bin, ab.path, ab.httpAddr, ab.env...)
		a.waitReady()
		a.stop()
	}
}

// BenchmarkAgentReloadOneOf100: a reload that replaces one target of 100:
// the time of POST /-/reload (the whole apply), and that the 99 others saw
// nothing (no delivery to the receiver).
func BenchmarkAgentReloadOneOf100(b *testing.B) {
	ab := newAgentBench(b, 101)
	ab.write(b, ab.targets[:100])
	a := runAgent(b, ab.bin, ab.path, ab.httpAddr, ab.env...)
	a.waitReady()
	defer a.stop()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if n := ab.recv.targetsSeen(); n == 100 {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("%d of 100 targets delivered", n)
		}
	}
	before := ab.recv.countsExcept("bench/svc-99:http", "bench/svc-100:http")
	i := 0
	for b.Loop() {
		ts := append([]string(nil), ab.targets[:99]...)
		ts = append(ts, ab.targets[99+i%2]) // swap the last one
		i++
		ab.write(b, ts)
		if code, res := a.reload(); code != 200 || res["error"] != nil {
			b.Fatalf("reload: %d %v", code, res)
		}
	}
	b.StopTimer()
	time.Sleep(time.Second)
	after := ab.recv.countsExcept("bench/svc-99:http", "bench/svc-100:http")
	for k, v := range before {
		if after[k] != v {
			b.Fatalf("%s got %d deliveries during the reloads of another target, want none", k, after[k]-v)
		}
	}
	b.ReportMetric(0, "deliveries-to-the-99")
}

// BenchmarkAgentMemory: the agent's resident memory idle (its source and
// sink, no target) and with 1,000 targets delivered.
func BenchmarkAgentMemory(b *testing.B) {
	ab := newAgentBench(b, 1000)
	for b.Loop() {
		idle := fmt.Sprintf("http: {listen: %q}\nsources:\n  k8s: {type: kubernetes, kubeconfig: %q}\nsinks:\n  xds: {type: xds, listen: %q}\npipelines:\n  - {source: k8s, sinks: [xds]}\n", freePort(b), ab.kubeconfig, freePort(b))
		ab.httpAddr = strings.Split(idle, "\"")[1]
		defer func() { ab.httpAddr = "" }()
		if err := os.WriteFile(ab.path, []byte(idle), 0o644); err != nil {
			b.Fatal(err)
		}
		a := runAgent(b, ab.bin, ab.path, ab.httpAddr, ab.env...)
		a.waitReady()
		time.Sleep(2 * time.Second)
		b.ReportMetric(float64(rss(b, a.cmd.Process.Pid))/(1<<20), "MiB-idle")
		a.stop()

		ab.write(b, ab.targets)
		a = runAgent(b, ab.bin, ab.path, ab.httpAddr, ab.env...)
		a.waitReady()
		for deadline := time.Now().Add(2 * time.Minute); ab.recv.targetsSeen() < 1000; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%d of 1000 targets delivered", ab.recv.targetsSeen())
			}
		}
		time.Sleep(2 * time.Second)
		b.ReportMetric(float64(rss(b, a.cmd.Process.Pid))/(1<<20), "MiB-1000-targets")
		a.stop()
	}
}

func (r *receiver) targetsSeen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, u := range r.got {
		seen[u.Target.String()] = true
	}
	return len(seen)
}

func (r *receiver) countsExcept(skip ...string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, u := range r.got {
		t := u.Target.String()
		if !slices.Contains(skip, t) {
			out[t]++
		}
	}
	return out
}
