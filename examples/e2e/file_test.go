package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/file"
)

// Backends listed in a file that a ConfigMap volume updates (the kubelet's
// ..data link swap), and in one rewritten in place, replaced one by one
// through the resolver (file:///greeter) and the pool.
func TestFileRolloutFailsNoCall(t *testing.T) {
	for _, w := range []struct {
		name  string
		write func(t *testing.T, dir string, data []byte)
	}{
		{"ConfigMap", writeConfigMap},
		{"in place", func(t *testing.T, dir string, data []byte) {
			if err := os.WriteFile(filepath.Join(dir, "endpoints.yaml"), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(w.name, func(t *testing.T) {
			dir := t.TempDir()
			src, err := file.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			hub := coretest.Hub(t, src)
			t.Cleanup(func() { hub.Close() })
			runRollout(t, rollout{
				hub: hub, scheme: "file", target: "file:///greeter", poolAt: core.Target{Name: "greeter"},
				backends: func(i int) *backend { return startBackend(t, fmt.Sprintf("b%d", i), loopbackIP(50+i), 0) },
				publish: func(live []*backend) {
					var b strings.Builder
					b.WriteString("targets:\n  - target: greeter\n    endpoints:\n")
					for _, be := range live {
						fmt.Fprintf(&b, "      - {addresses: [%s], port: %d, name: %s}\n", be.ip, be.port, be.name)
					}
					w.write(t, dir, []byte(b.String()))
				},
			})
		})
	}
}

// writeConfigMap writes endpoints.yaml as the kubelet updates a ConfigMap
// volume: a new ..<timestamp> directory, a ..data_tmp link renamed over
// ..data, the old directory removed.
func writeConfigMap(t *testing.T, dir string, data []byte) {
	t.Helper()
	ts, err := os.MkdirTemp(dir, "..2026_")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "endpoints.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "endpoints.yaml")
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink("..data/endpoints.yaml", link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}
