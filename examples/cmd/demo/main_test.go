package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

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
	t.Logf("demo: %d calls, %d failed, %d pods served", s.ok+s.failed, s.failed, len(s.perPod))
}
