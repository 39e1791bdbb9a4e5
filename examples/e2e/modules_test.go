package e2e_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The product modules, as a user imports them.
var productModules = []string{"core", "sources/kubernetes", "sources/dns", "sources/file", "sinks/grpcresolver", "sinks/connpool", "sinks/webhook", "sinks/xds", "core/agent", "sources/etcd"}

const repoModule = "github.com/disco-lb/disco"

// repoRoot is the repository's root, two levels above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("no go.work in %s: %v", root, err)
	}
	return root
}

// releaseVersion is the version the modules require each other at (one
// version for all, see make modules-check).
func releaseVersion(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "examples", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(repoModule+"/core") + `\s+(v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("examples/go.mod does not require core")
	}
	return string(m[1])
}

// moduleProxy writes a file-based Go module proxy serving every product
// module of the repository at version, as `go get` would find them once
// tagged, and returns its directory.
func moduleProxy(t *testing.T, root, version string) string {
	t.Helper()
	dir := t.TempDir()
	for _, m := range productModules {
		path := repoModule + "/" + m
		esc, err := module.EscapePath(path)
		if err != nil {
			t.Fatal(err)
		}
		vdir := filepath.Join(dir, esc, "@v")
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			t.Fatal(err)
		}
		gomod, err := os.ReadFile(filepath.Join(root, m, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := json.Marshal(map[string]string{"Version": version, "Time": "2026-12-03T00:00:00Z"})
		for name, data := range map[string][]byte{"list": []byte(version + "\n"), version + ".info": info, version + ".mod": gomod} {
			if err := os.WriteFile(filepath.Join(vdir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.Create(filepath.Join(vdir, version+".zip"))
		if err != nil {
			t.Fatal(err)
		}
		// Nested modules (kubetest) are left out, as in a real module zip.
		if err := modzip.CreateFromDir(f, module.Version{Path: path, Version: version}, filepath.Join(root, m)); err != nil {
			t.Fatalf("zip of %s: %v", path, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// consumer is a user's program in a directory outside the repository,
// built with GOWORK=off against the module proxy (then the machine's module
// cache, read as a proxy, then the public proxy) and a module cache of its
// own, so nothing of the repository leaks in through go.work or replace
// directives.
type consumer struct {
	t   *testing.T
	dir string
	env []string
}

func newConsumer(t *testing.T, proxy, name, main string) *consumer {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/"+name+"\n\ngo 1.26.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"GOWORK=off", "GOFLAGS=-mod=mod", "GOSUMDB=off", "GOTOOLCHAIN=local",
		"GOMODCACHE="+filepath.Join(t.TempDir(), "modcache"),
		"GOPROXY=file://"+proxy+",file://"+filepath.Join(strings.TrimSpace(string(cache)), "cache", "download")+",https://proxy.golang.org",
	)
	c := &consumer{t: t, dir: dir, env: env}
	t.Cleanup(func() { c.run("go", "clean", "-modcache") }) // the module cache is read-only
	return c
}

func (c *consumer) run(name string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = c.dir, c.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// build gets the modules as the README says (go get of each), builds the
// program, and returns its `go list -m all` and the binary's path and size.
func (c *consumer) build(version string, mods ...string) (modules []string, bin string, size int64) {
	c.t.Helper()
	for _, m := range mods {
		c.run("go", "get", repoModule+"/"+m+"@"+version)
	}
	c.run("go", "mod", "tidy")
	bin = filepath.Join(c.dir, "consumer")
	c.run("go", "build", "-trimpath", "-o", bin, ".")
	fi, err := os.Stat(bin)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(c.run("go", "list", "-m", "all")), "\n") {
		modules = append(modules, strings.Fields(l)[0])
	}
	return modules, bin, fi.Size()
}

func holds(modules []string, prefix string) []string {
	var out []string
	for _, m := range modules {
		if strings.HasPrefix(m, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// Each product module works as a user gets it: go get from a module proxy
// (here a file-based one built from this repository at the release
// version), outside the repository, without go.work. What each import
// costs is logged for the README's module table.
func TestModulesWorkOutsideTheRepository(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three programs from a module proxy")
	}
	root := repoRoot(t)
	version := releaseVersion(t, root)
	proxy := moduleProxy(t, root, version)

	t.Run("core alone", func(t *testing.T) {
		c := newConsumer(t, proxy, "coreonly", coreMain)
		mods, bin, size := c.build(version, "core")
		for _, unwanted := range []string{"k8s.io/", "google.golang.org/grpc", "github.com/prometheus/"} {
			if k := holds(mods, unwanted); len(k) > 0 {
				t.Fatalf("core alone has %v in its module graph", k)
			}
		}
		if out := c.run(bin); !strings.Contains(out, "greeter: 10.0.0.1:50051") {
			t.Fatalf("the program printed %q", out)
		}
		t.Logf("core: %d modules (%s), binary %.1f MB", len(mods), strings.Join(mods[1:], " "), float64(size)/1e6)
	})

	t.Run("core and grpcresolver with a source of its own", func(t *testing.T) {
		c := newConsumer(t, proxy, "ownsource", ownSourceMain)
		mods, bin, size := c.build(version, "core", "sinks/grpcresolver")
		if k := holds(mods, "k8s.io/"); len(k) > 0 {
			t.Fatalf("a program without the Kubernetes source has %v in its module graph", k)
		}
		if out := c.run(bin); !strings.Contains(out, "resolved fixed:///greeter to 10.0.0.1:50051") {
			t.Fatalf("the program printed %q", out)
		}
		t.Logf("core + grpcresolver: %d modules, binary %.1f MB", len(mods), float64(size)/1e6)
	})

	t.Run("core and connpool", func(t *testing.T) {
		c := newConsumer(t, proxy, "pool", poolMain)
		mods, bin, size := c.build(version, "core", "sinks/connpool")
		for _, unwanted := range []string{"k8s.io/", "github.com/prometheus/", repoModule + "/sources", repoModule + "/sinks/grpcresolver"} {
			if k := holds(mods, unwanted); len(k) > 0 {
				t.Fatalf("core + connpool has %v in its module graph", k)
			}
		}
		if out := c.run(bin); !strings.Contains(out, "picked 10.0.0.1:50051") {
			t.Fatalf("the program printed %q", out)
		}
		t.Logf("core + connpool: %d modules, binary %.1f MB", len(mods), float64(size)/1e6)
	})

	t.Run("the file and DNS sources with core", func(t *testing.T) {
		c := newConsumer(t, proxy, "filedns", fileDNSMain)
		mods, bin, size := c.build(version, "core", "sources/file", "sources/dns")
		for _, unwanted := range []string{"k8s.io/", "google.golang.org/grpc", "github.com/prometheus/", repoModule + "/sources/kubernetes", repoModule + "/sinks"} {
			if k := holds(mods, unwanted); len(k) > 0 {
				t.Fatalf("core + file + dns has %v in its module graph", k)
			}
		}
		if out := c.run(bin); !strings.Contains(out, "greeter: 10.0.0.1:50051") || !strings.Contains(out, "dns target: _grpc._tcp.greeter.example.com") {
			t.Fatalf("the program printed %q", out)
		}
		t.Logf("core + file + dns: %d modules, binary %.1f MB", len(mods), float64(size)/1e6)
	})

	t.Run("an xDS server over the file source", func(t *testing.T) {
		c := newConsumer(t, proxy, "xdsfile", xdsFileMain)
		mods, bin, size := c.build(version, "core", "sources/file", "sinks/xds")
		for _, unwanted := range []string{"k8s.io/", repoModule + "/sources/kubernetes", repoModule + "/sinks/grpcresolver"} {
			if k := holds(mods, unwanted); len(k) > 0 {
				t.Fatalf("core + file + xds has %v in its module graph", k)
			}
		}
		cmd := exec.Command(bin)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdin.Close(); _ = cmd.Wait() }()
		sc := bufio.NewScanner(out)
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), "serving xDS on ") {
			t.Fatalf("the program printed %q", sc.Text())
		}
		addr := strings.TrimPrefix(sc.Text(), "serving xDS on ")
		if got := rawAssignment(t, addr, "greeter"); got != "10.0.0.1:50051" {
			t.Fatalf("the assignment of greeter: %q, want 10.0.0.1:50051", got)
		}
		t.Logf("core + file + xds: %d modules, binary %.1f MB", len(mods), float64(size)/1e6)
	})

	t.Run("core and the etcd source", func(t *testing.T) {
		c := newConsumer(t, proxy, "etcdonly", etcdMain)
		mods, bin, size := c.build(version, "core", "sources/etcd")
		// (etcd's client brings Prometheus' client into the module graph.)
		for _, unwanted := range []string{"k8s.io/", repoModule + "/sinks", repoModule + "/sources/kubernetes"} {
			if k := holds(mods, unwanted); len(k) > 0 {
				t.Fatalf("core + etcd has %v in its module graph", k)
			}
		}
		if out := c.run(bin); !strings.Contains(out, "target: greeter") {
			t.Fatalf("the program printed %q", out)
		}
		t.Logf("core + etcd: %d modules, binary %.1f MB", len(mods), float64(size)/1e6)
	})

	t.Run("a minimal agent distribution: the file source and the xDS sink", func(t *testing.T) {
		c := newConsumer(t, proxy, "minidisco", miniDistributionMain)
		mods, bin, size := c.build(version, "core", "core/agent", "sources/file", "sinks/xds")
		for _, unwanted := range []string{"k8s.io/", "github.com/hashicorp/", repoModule + "/sources/kubernetes", repoModule + "/sources/dns", repoModule + "/sinks/webhook", repoModule + "/core/plugin"} {
			if k := holds(mods, unwanted); len(k) > 0 {
				t.Fatalf("the minimal distribution has %v in its module graph", k)
			}
		}
		if out := c.run(bin, "version"); !strings.Contains(out, "sources: file\nsinks: xds") {
			t.Fatalf("version: %q", out)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "greeter.yaml"), []byte("targets:\n  - target: greeter\n    endpoints: [10.0.0.1:50051]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		xdsAddr, httpAddr := freePort(t), freePort(t)
		config := filepath.Join(t.TempDir(), "disco.yaml")
		if err := os.WriteFile(config, []byte(fmt.Sprintf("http: {listen: %q}\nsources:\n  files: {type: file, path: %q}\nsinks:\n  xds: {type: xds, listen: %q}\npipelines:\n  - {source: files, sinks: [xds]}\n", httpAddr, dir, xdsAddr)), 0o644); err != nil {
			t.Fatal(err)
		}
		agent := runAgent(t, bin, config, httpAddr)
		agent.waitReady()
		if got := rawAssignment(t, xdsAddr, "greeter"); got != "10.0.0.1:50051" {
			t.Fatalf("the minimal agent serves greeter as %q", got)
		}
		_ = agent.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-agent.exited; err != nil {
			t.Fatalf("SIGTERM: %v", err)
		}
		t.Logf("minimal agent (core/agent + file + xds): %d modules, binary %.1f MB", len(mods), float64(size)/1e6)
	})

	t.Run("the README's example against a real API server", func(t *testing.T) {
		c := newConsumer(t, proxy, "readme", readmeMain)
		mods, bin, size := c.build(version, "sources/kubernetes", "sinks/grpcresolver")
		t.Logf("sources/kubernetes + grpcresolver: %d modules, binary %.1f MB", len(mods), float64(size)/1e6)

		// Two pods serving gRPC health, a Service's slice for them.
		cl := newCluster(t, 1)
		ctx := ctxFor(t, 2*time.Minute)
		want := map[string]bool{}
		for i := range 2 {
			name := fmt.Sprintf("health-%d", i)
			p, err := cl.fleet.AddPod(ctx, name, "")
			if err != nil {
				t.Fatal(err)
			}
			ln, err := p.Listen("tcp", ":50051")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			healthpb.RegisterHealthServer(gs, health.NewServer())
			done := make(chan struct{})
			go func() { defer close(done); gs.Serve(ln) }()
			t.Cleanup(func() { gs.Stop(); <-done })
			cl.set(name, true, false)
			want[p.Addr(50051)] = true
		}
		cl.publish()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+cl.cp.Kubeconfig())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("the README's example failed: %v\n%s", err, out.String())
		}
		got := map[string]bool{}
		for _, m := range regexp.MustCompile(`SERVING from (\S+)`).FindAllStringSubmatch(out.String(), -1) {
			got[m[1]] = true
		}
		if len(got) != len(want) {
			t.Fatalf("answers from %v, want every pod %v:\n%s", got, want, out.String())
		}
		for a := range want {
			if !got[a] {
				t.Fatalf("pod %s never answered:\n%s", a, out.String())
			}
		}
	})
}

// coreMain: core alone, a source and a sink of the user's.
const coreMain = `package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/disco-lb/disco/core"
)

func main() {
	target := core.Target{Name: "greeter"}
	set, err := core.NewSet(&core.Endpoint{Addresses: []string{"10.0.0.1"}, Port: 50051})
	if err != nil {
		log.Fatal(err)
	}
	src := core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	})
	hub, err := core.NewHub(src)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	got := make(chan core.Update, 1)
	sub, err := hub.Subscribe("print", core.SinkFunc(func(_ context.Context, u core.Update) error { got <- u; return nil }), target)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	select {
	case u := <-got:
		fmt.Println(u.Target.Name+":", u.State.Endpoints.At(0).HostPort())
	case <-time.After(10 * time.Second):
		log.Fatal("nothing delivered")
	}
}
`

// ownSourceMain: core and the resolver, with a source written by the user.
const ownSourceMain = `package main

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/grpcresolver"
)

// fixed is the user's own source: one endpoint for any target.
type fixed struct{}

func (fixed) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	set, err := core.NewSet(&core.Endpoint{Addresses: []string{"10.0.0.1"}, Port: 50051})
	if err != nil {
		return err
	}
	pub.Publish(set)
	<-ctx.Done()
	return nil
}

type printer struct {
	resolver.ClientConn
	got chan string
}

func (p printer) UpdateState(s resolver.State) error { p.got <- s.Endpoints[0].Addresses[0].Addr; return nil }

func main() {
	hub, err := core.NewHub(fixed{})
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	b, err := grpcresolver.New("fixed", hub)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	cc, err := grpc.NewClient("fixed:///greeter", grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	p := printer{got: make(chan string, 1)}
	u, _ := url.Parse("fixed:///greeter")
	r, err := b.Build(resolver.Target{URL: *u}, p, resolver.BuildOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	select {
	case a := <-p.got:
		fmt.Println("resolved fixed:///greeter to", a)
	case <-time.After(10 * time.Second):
		log.Fatal("nothing resolved")
	}
}
`

// poolMain: core and the pool, with connections of the user's own type.
const poolMain = `package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/connpool"
)

func main() {
	target := core.Target{Name: "greeter"}
	set, err := core.NewSet(&core.Endpoint{Addresses: []string{"10.0.0.1"}, Port: 50051})
	if err != nil {
		log.Fatal(err)
	}
	hub, err := core.NewHub(core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	pool, err := connpool.New(func(_ context.Context, e *core.Endpoint) (string, error) { return e.HostPort(), nil },
		func(string) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sub, err := hub.Subscribe("pool", pool, target)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := pool.Pick(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Done()
	fmt.Println("picked", h.Conn)
}
`

// readmeMain is the README's first example, as a program: the Kubernetes
// source from $KUBECONFIG, one hub, the resolver, round robin; it calls the
// pods' health service and prints who answered.
const readmeMain = `package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	"github.com/disco-lb/disco/sources/kubernetes"
)

func main() {
	cfg, ns, err := kubernetes.LoadConfig("") // in-cluster, or $KUBECONFIG
	if err != nil {
		log.Fatal(err)
	}
	src, err := kubernetes.New(cfg, kubernetes.WithNamespace(ns))
	if err != nil {
		log.Fatal(err)
	}
	hub, err := core.NewHub(src) // one per source: every client shares its watches
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	b, err := grpcresolver.NewKubernetes(hub)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc", grpc.WithResolvers(b),
		grpc.WithDefaultServiceConfig(` + "`" + `{"loadBalancingConfig":[{"round_robin":{}}]}` + "`" + `),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc) // every ready pod, followed as pods come and go
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 20 {
		var p peer.Peer
		r, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(r.Status, "from", p.Addr)
	}
}
`

// fileDNSMain: the file source read through a hub, the DNS source built
// and given a target, with core only.
const fileDNSMain = `package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sources/dns"
	"github.com/disco-lb/disco/sources/file"
)

func main() {
	dir, err := os.MkdirTemp("", "filedns")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data := "targets:\n  - target: greeter\n    endpoints: [10.0.0.1:50051]\n"
	if err := os.WriteFile(filepath.Join(dir, "endpoints.yaml"), []byte(data), 0o644); err != nil {
		log.Fatal(err)
	}
	src, err := file.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	hub, err := core.NewHub(src)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	got := make(chan core.Update, 1)
	target := core.Target{Name: "greeter"}
	sub, err := hub.Subscribe("print", core.SinkFunc(func(_ context.Context, u core.Update) error {
		select {
		case got <- u:
		default:
		}
		return nil
	}), target)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.WaitSynced(ctx); err != nil {
		log.Fatal(err)
	}
	u := <-got
	fmt.Println(u.Target.Name+":", u.State.Endpoints.At(0).HostPort())

	d, err := dns.New(dns.WithServer("127.0.0.1:53"))
	if err != nil {
		log.Fatal(err)
	}
	t, err := d.Target("dns+srv:///_grpc._tcp.greeter.example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("dns target:", t.Name)
}
`

// xdsFileMain: an xDS server for the targets of a file.
const xdsFileMain = `package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/xds"
	"github.com/disco-lb/disco/sources/file"
)

func main() {
	dir, err := os.MkdirTemp("", "xdsfile")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data := "targets:\n  - target: greeter\n    endpoints: [10.0.0.1:50051]\n"
	if err := os.WriteFile(filepath.Join(dir, "endpoints.yaml"), []byte(data), 0o644); err != nil {
		log.Fatal(err)
	}
	src, err := file.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	hub, err := core.NewHub(src)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	srv, err := xds.New(hub, xds.WithTargetParser(func(s string) (core.Target, error) { return core.Target{Name: s}, nil }))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("serving xDS on", lis.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }() // until stdin closes
	if err := srv.Serve(ctx, lis); err != nil {
		log.Fatal(err)
	}
}
`

// rawAssignment asks the xDS server at addr for the ClusterLoadAssignment
// of name on a raw ADS stream and returns its one endpoint's address.
func rawAssignment(t *testing.T, addr, name string) string {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := ctxFor(t, 30*time.Second)
	s, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "modules-test"}, TypeUrl: resource.EndpointType, ResourceNames: []string{name}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range r.Resources {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				t.Fatal(err)
			}
			for _, l := range cla.Endpoints {
				for _, e := range l.LbEndpoints {
					sa := e.GetEndpoint().GetAddress().GetSocketAddress()
					return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				}
			}
		}
		// An empty assignment first (not synced yet): ACK, wait for more.
		if err := s.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "modules-test"}, TypeUrl: resource.EndpointType,
			ResourceNames: []string{name}, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
}

// miniDistributionMain: a distribution of the agent with two factories.
const miniDistributionMain = `package main

import (
	"os"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/agent"
	"github.com/disco-lb/disco/sinks/xds"
	"github.com/disco-lb/disco/sources/file"
)

func main() {
	f := agent.Factories{Sources: []core.SourceFactory{file.Factory()}, Sinks: []core.SinkFactory{xds.Factory()}}
	os.Exit(agent.Main(os.Args[1:], f, "mini", os.Stdout, os.Stderr))
}
`

// etcdMain: core and the etcd source (no etcd needed to parse a target).
const etcdMain = `package main

import (
	"fmt"
	"log"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sources/etcd"
)

func main() {
	src, err := etcd.New([]string{"127.0.0.1:1"})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	t, err := src.Target("etcd:///greeter")
	if err != nil {
		log.Fatal(err)
	}
	hub, err := core.NewHub(src)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	fmt.Println("target:", t.Name)
}
`
