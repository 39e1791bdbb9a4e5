package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// make webhook-example: from nothing, a secret, the receiver binary, this
// sender, and three deliveries the receiver verified and printed.
func TestExampleRunsFromNothing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "webhook-sender")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-example").CombinedOutput()
	if err != nil {
		t.Fatalf("webhook-sender -example: %v\n%s", err, out)
	}
	for _, want := range []string{
		"receiver: greeter seq 1 (+2 -0 ~0, fresh): 10.0.0.1:50051 10.0.0.2:50051",
		"receiver: greeter seq 2 (+1 -0 ~0, fresh): 10.0.0.1:50051 10.0.0.2:50051 10.0.0.3:50051",
		"receiver: greeter seq 3 (+0 -1 ~0, fresh): 10.0.0.2:50051 10.0.0.3:50051",
		"whsec_…(redacted, 32 bytes)",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	secret, err := exec.Command(bin, "secret").Output()
	if err != nil || !strings.HasPrefix(string(secret), "whsec_") {
		t.Fatalf("webhook-sender secret: %q %v", secret, err)
	}
	// Without a secret: one line saying how to make one.
	cmd := exec.Command(bin, "-url", "http://127.0.0.1:1/", "-source", t.TempDir(), "-target", "greeter")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "webhook-sender secret") {
		t.Fatalf("without a secret: %v\n%s", err, out)
	}
}
