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
	for _, want := range []string{"backend-0 answered", "backend-1 answered", "backend-2 answered", "300 calls, 0 failed", "plugin-log-sink\tupdate"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("plugin-host output lacks %q:\n%s", want, out)
		}
	}
	// What a user reads: INFO and up, each field once, no stack trace.
	for _, unwanted := range []string{"DEBUG", `"timestamp"`, "goroutine ", ".go:"} {
		if strings.Contains(string(out), unwanted) {
			t.Fatalf("plugin-host output has %q:\n%s", unwanted, out)
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Count(line, `"plugin":`) > 1 {
			t.Fatalf("a field twice: %s", line)
		}
	}

	// A plugin binary that is not there: one line saying what to do.
	out, err = exec.Command(filepath.Join(bin, "plugin-host"), "-source", filepath.Join(bin, "no-such-plugin")).CombinedOutput()
	if err == nil {
		t.Fatalf("plugin-host ran without its plugin:\n%s", out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "no source plugin binary") || !strings.Contains(lines[0], "-example") {
		t.Fatalf("a missing plugin binary: want one line saying what to do, got:\n%s", out)
	}
}

// make plugin-example: plugin-host -example builds the plugins, starts the
// greeters and runs, from nothing.
func TestPluginHostExampleRunsFromNothing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "plugin-host")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/plugin-host").CombinedOutput(); err != nil {
		t.Fatalf("build plugin-host: %v\n%s", err, out)
	}
	for _, source := range []string{"file", "node"} {
		t.Run(source, func(t *testing.T) {
			if source == "node" {
				npmInstall(t, "npm-grpc-js-1.14.7", "@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1") // or skip without npm
			}
			cmd := exec.Command(bin, "-example", "-example-source", source, "-calls", "20")
			cmd.Dir = ".." // examples/, as make runs it
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("plugin-host -example: %v\n%s", err, out)
			}
			for _, want := range []string{"answered", "20 calls, 0 failed", "plugin-log-sink\tupdate", `"endpoints": ["127.0.0.1:`} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("plugin-host -example output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
