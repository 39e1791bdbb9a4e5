package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/disco-lb/disco/core/agent"
)

// The quick start's config is valid for this distribution, and version
// lists every type.
func TestExampleConfigAndVersion(t *testing.T) {
	f := factories()
	if _, err := agent.Load("example/disco.yaml", f); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := agent.Main([]string{"validate", "-config", "example/disco.yaml"}, f, "test", &out, &errOut); code != 0 {
		t.Fatalf("validate: %d %s", code, errOut.String())
	}
	out.Reset()
	agent.Main([]string{"version"}, f, "test", &out, &errOut)
	if got := out.String(); got != "disco test\nsources: dns, etcd, file, kubernetes, plugin\nsinks: plugin, webhook, xds\n" {
		t.Fatalf("version: %q", got)
	}
	if code := agent.Main([]string{"nonsense"}, f, "test", &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage: disco run") {
		t.Fatalf("a bad command: %d %q", code, errOut.String())
	}
}
