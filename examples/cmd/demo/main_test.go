package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

// The demo, in short phases: every phase runs, every discovery event is
// shown, and no call fails.
func TestDemoRunsWithoutAFailedCall(t *testing.T) {
	if err := podnet.Check(); err != nil && !podnet.Required() {
		t.Skip(err)
	}
	if _, err := kubetest.Binaries(); err != nil && !kubetest.Required() {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	s, err := run(ctx, config{pods: 2, scaleUp: 3, scaleDown: 1, phase: 1500 * time.Millisecond, rate: 300, concurrency: 8, preStop: 300 * time.Millisecond}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{"== scale 2 -> 3", "== rolling restart", "== scale 3 -> 1", "discovery: + greeter-5",
		"discovery: ~ greeter-0  ready=false serving=true terminating=true", "discovery: - greeter-0", "== summary"} {
		if !strings.Contains(text, want) {
			t.Fatalf("output lacks %q:\n%s", want, text)
		}
	}
	if s.failed != 0 || s.ok < 500 || len(s.perPod) < 6 {
		t.Fatalf("summary %+v\n%s", s, text)
	}
	// Every line fits 100 columns; the status lines show live pods only
	// (a pod gone is named once); the summary has a row per phase.
	for _, line := range strings.Split(text, "\n") {
		if n := utf8.RuneCountInString(line); n > 100 {
			t.Errorf("a line of %d columns:\n%s", n, line)
		}
	}
	if strings.Count(text, "gone: 0") != 1 && !strings.Contains(text, "gone: 0,") {
		t.Errorf("pod greeter-0 is not named gone exactly once:\n%s", text)
	}
	for _, row := range []string{"steady ", "scale up ", "rolling restart ", "scale down "} {
		if !regexp.MustCompile(`(?m)^   ` + row + `\s+\d+\s+0\s+\d+\s+(\d+\.\d\d|-)$`).MatchString(text) {
			t.Errorf("the summary has no row %q with 0 failed:\n%s", row, text)
		}
	}
	t.Logf("demo: %d calls, %d failed, %d pods served", s.ok+s.failed, s.failed, len(s.perPod))
}

// Without root the demo runs inside a user + network namespace of its own:
// the real binary, run as the unprivileged user nobody.
func TestDemoRunsWithoutRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to the user nobody")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare")
	}
	// The feature depends on the kernel: where it forbids unprivileged user
	// namespaces the demo says so (and this test cannot show the rest).
	if out, err := exec.Command("su", "-s", "/bin/sh", "nobody", "-c", "unshare --user --map-root-user --net true").CombinedOutput(); err != nil {
		t.Skipf("this kernel forbids unprivileged user namespaces: %v %s", err, out)
	}
	bins, err := kubetest.Binaries()
	if err != nil {
		if kubetest.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// Everything nobody needs, readable by nobody.
	dir, err := os.MkdirTemp("", "disco-demo-nobody-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "demo"), ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if out, err := exec.Command("cp", filepath.Join(bins, b), filepath.Join(dir, b)).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v %s", b, err, out)
		}
	}
	cmd := exec.CommandContext(ctx, "su", "-s", "/bin/sh", "nobody", "-c",
		fmt.Sprintf("cd %s && HOME=%s TMPDIR=%s DISCO_K8S_BINS=%s ./demo -pods 2 -scale-up 3 -scale-down 1 -phase 1s -rate 200 -concurrency 4 -prestop 300ms", dir, dir, dir, dir))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "== summary") || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("demo as nobody:\n%s", out)
	}
	t.Logf("demo as nobody, in its own user namespace:\n%s", lastLines(string(out), 8))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
