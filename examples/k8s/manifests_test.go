// Package k8s holds the example's Kubernetes manifests; its test validates
// every one of them with a server-side dry run against a real API server
// (docker and kind are not available where CI runs, so this is the proof
// that they are valid).
package k8s

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/disco-lb/disco/sinks/xds"
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
