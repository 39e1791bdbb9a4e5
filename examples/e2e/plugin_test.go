package e2e_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/disco-lb/disco/examples/greeter"
)

// The plugin examples end to end: plugin-host runs the file source as a
// plugin binary (plugin-file-source) and a sink plugin (plugin-log-sink),
// dials three real greeter servers through plugin:///greeter with disco's
// resolver, and every call succeeds, answered by every server; the sink
// plugin's log lines reach the host's log.
func TestPluginExamplesEndToEnd(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"plugin-file-source", "plugin-log-sink", "plugin-host"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("targets:\n  - target: greeter\n    endpoints:\n")
	for i := range 3 {
		ln, err := net.Listen("tcp", loopbackIP(60+i)+":0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		greeter.Register(gs, &greeter.Server{Pod: fmt.Sprintf("backend-%d", i)})
		done := make(chan struct{})
		go func() { defer close(done); gs.Serve(ln) }()
		t.Cleanup(func() { gs.Stop(); <-done })
		fmt.Fprintf(&b, "      - %s\n", ln.Addr())
	}
	if err := os.WriteFile(filepath.Join(dir, "endpoints.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "plugin-host"), "-source", filepath.Join(bin, "plugin-file-source"), "-source-arg", dir,
		"-sink", filepath.Join(bin, "plugin-log-sink"), "-target", "greeter", "-calls", "300")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("plugin-host: %v\n%s", err, out)
	}
	for _, want := range []string{"backend-0 answered", "backend-1 answered", "backend-2 answered", "300 calls, 0 failed", "plugin-log-sink: update"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("plugin-host output lacks %q:\n%s", want, out)
		}
	}
}
