// Package k8s holds the example's Kubernetes manifests; its test validates
// every one of them with a server-side dry run against a real API server
// (docker and kind are not available where CI runs, so this is the proof
// that they are valid).
package k8s

import (
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/agent"
	"github.com/disco-lb/disco/core/plugin"
	"github.com/disco-lb/disco/sinks/webhook"
	"github.com/disco-lb/disco/sinks/xds"
	"github.com/disco-lb/disco/sources/dns"
	"github.com/disco-lb/disco/sources/etcd"
	"github.com/disco-lb/disco/sources/file"
	"github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

func TestManifestsPassServerSideDryRun(t *testing.T) {
	cp := kubetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	// The namespace for real (a dry run creates nothing for the others to
	// live in), then every manifest as a server-side dry run.
	if _, err := cp.Kubectl(ctx, "apply", "-f", "namespace.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		out, err := cp.Kubectl(ctx, "apply", "--dry-run=server", "-f", f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !strings.Contains(string(out), "(server dry run)") {
			t.Fatalf("%s: not a server dry run: %s", f, out)
		}
		t.Logf("%s: %s", f, strings.TrimSpace(string(out)))
	}
}

// The clients' bootstrap in xds-server.yaml is what xds.Bootstrap writes
// for that server (the example stays in step with the code).
func TestXDSBootstrapConfigMapIsCurrent(t *testing.T) {
	f, err := os.Open("xds-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	var got string
	for {
		var cm corev1.ConfigMap
		if err := dec.Decode(&cm); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if cm.Kind == "ConfigMap" && cm.Name == "xds-bootstrap" {
			got = cm.Data["bootstrap.json"]
		}
	}
	want, err := xds.Bootstrap{ServerURI: "xds-server.demo.svc:18000"}.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("the ConfigMap's bootstrap.json: %v", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("the ConfigMap's bootstrap:\n%s\nxds.Bootstrap writes:\n%s", got, want)
	}
}

// The agent's deployment (core/agent/cmd/disco/deploy): RBAC, its
// ConfigMap, the central Deployment and the node-local DaemonSet pass a
// server-side dry run; the ConfigMap's disco.yaml is a valid config of the
// default distribution.
func TestAgentManifestsPassServerSideDryRun(t *testing.T) {
	cp := kubetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cp.EnsureNamespace(ctx, "disco"); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../../core/agent/cmd/disco/deploy/*.yaml")
	if err != nil || len(files) != 4 {
		t.Fatalf("agent manifests: %v %v", files, err)
	}
	for _, f := range files {
		out, err := cp.Kubectl(ctx, "apply", "--dry-run=server", "-f", f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Logf("%s: %s", filepath.Base(f), strings.TrimSpace(string(out)))
	}
	data := configMapData(t, "../../core/agent/cmd/disco/deploy/config.yaml", "disco-agent", "disco.yaml")
	if _, err := agent.Parse("config.yaml:disco.yaml", []byte(data), defaultDistribution()); err != nil {
		t.Fatalf("the ConfigMap's disco.yaml: %v", err)
	}
}

// defaultDistribution is core/agent/cmd/disco's factories (a main package
// cannot be imported; its own test checks its version line).
func defaultDistribution() agent.Factories {
	return agent.Factories{
		Sources: []core.SourceFactory{kubernetes.Factory(), dns.Factory(), file.Factory(), etcd.Factory(), plugin.SourceFactory()},
		Sinks:   []core.SinkFactory{xds.Factory(), webhook.Factory(), plugin.SinkFactory()},
	}
}

// configMapData is one key of the named ConfigMap of a manifest file.
func configMapData(t *testing.T, path, name, key string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var cm corev1.ConfigMap
		if err := dec.Decode(&cm); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if cm.Kind == "ConfigMap" && cm.Name == name {
			return cm.Data[key]
		}
	}
	t.Fatalf("%s: no ConfigMap %s", path, name)
	return ""
}

// The Dockerfile's build, done here (no Docker engine on these machines):
// its go build line gives a static binary (no interpreter) that runs as
// the image's user, 65532, from a read-only directory, and accepts the
// ConfigMap's config.
func TestAgentImageBuildAsTheDockerfileDoes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	docker, err := os.ReadFile("../../core/agent/cmd/disco/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(docker), "CGO_ENABLED=0 GOWORK=off go build -trimpath") || !strings.Contains(string(docker), "USER 65532:65532") {
		t.Fatal("the Dockerfile no longer builds as this test does: update both")
	}
	// Not t.TempDir: its parent is private to root, and the binary runs as
	// 65532.
	dir, err := os.MkdirTemp("", "disco-image")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755); os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "disco")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -X main.version=test", "-o", bin, ".")
	build.Dir = "../../core/agent/cmd/disco"
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary is dynamically linked: it would not run on distroless/static")
		}
	}
	ef.Close()
	config := filepath.Join(dir, "disco.yaml")
	if err := os.WriteFile(config, []byte(configMapData(t, "../../core/agent/cmd/disco/deploy/config.yaml", "disco-agent", "disco.yaml")), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil { // read-only, as the image's root file system
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "validate", "-config", config)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "valid: 1 sources, 1 sinks, 1 pipelines") {
		t.Fatalf("disco validate as 65532: %v\n%s", err, out)
	}
	version := exec.Command(bin, "version")
	version.SysProcAttr = cmd.SysProcAttr
	if out, err := version.Output(); err != nil || !strings.HasPrefix(string(out), "disco test\n") {
		t.Fatalf("disco version: %v %s", err, out)
	}
}
