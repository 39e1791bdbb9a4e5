// Package k8s holds the example's Kubernetes manifests; its test validates
// every one of them with a server-side dry run against a real API server
// (docker and kind are not available where CI runs, so this is the proof
// that they are valid).
package k8s

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
