package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/plugin"
)

// nodeSource starts the Node.js source plugin (examples/plugins/
// node-json-source) over a directory of its own, through a wrapper script
// the host runs as the plugin binary.
func nodeSource(t *testing.T) (*plugin.Source, string) {
	t.Helper()
	modules := npmInstall(t, "npm-grpc-js-1.14.7", "@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1")
	script, err := filepath.Abs("../plugins/node-json-source/index.js")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "node-json-source")
	wrapper := fmt.Sprintf("#!/bin/sh\nNODE_PATH=%q exec node %q \"$@\"\n", modules, script)
	if err := os.WriteFile(bin, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src, err := plugin.NewSource(bin, plugin.WithArgs(dir), plugin.WithRestart(20*time.Millisecond, 200*time.Millisecond, 5))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, dir
}

// nodeHarness runs core's source conformance suite against the Node.js
// plugin: the same suite the Go plugins pass.
type nodeHarness struct {
	dir string
	src *plugin.Source
	n   atomic.Int32
}

func (h *nodeHarness) Source() core.Source { return h.src }
func (h *nodeHarness) NewTarget(t *testing.T) core.Target {
	return core.Target{Name: fmt.Sprintf("t%d", h.n.Add(1))}
}
func (h *nodeHarness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	hps := []string{}
	for _, b := range bs {
		hps = append(hps, b.HostPort())
	}
	data, _ := json.Marshal(hps)
	path := filepath.Join(h.dir, tg.Name+".json")
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
func (h *nodeHarness) Break(t *testing.T) bool {
	return os.WriteFile(filepath.Join(h.dir, "broken"), nil, 0o644) == nil
}
func (h *nodeHarness) Heal(t *testing.T) { os.Remove(filepath.Join(h.dir, "broken")) }
func (h *nodeHarness) Missing(t *testing.T) (core.Target, error, bool) {
	return core.Target{Name: "nosuch"}, nil, true
}
func (h *nodeHarness) Timeout() time.Duration { return 10 * time.Second }
func (h *nodeHarness) IgnoreGoroutines() []string {
	return []string{"go-plugin", "hashicorp", "os/exec", "grpc"}
}

func TestNodePluginPassesTheSourceSuite(t *testing.T) {
	src, dir := nodeSource(t)
	coretest.TestSource(t, &nodeHarness{dir: dir, src: src})
}

// Cancelling a watch on the host ends it inside the Node.js plugin.
func TestNodePluginSeesCancellation(t *testing.T) {
	src, dir := nodeSource(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, core.Target{Name: "c"}, nopPublisher{}) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "c.cancelled")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch was not cancelled inside the Node.js plugin")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type nopPublisher struct{}

func (nopPublisher) Publish(core.Set)             {}
func (nopPublisher) PublishStale(core.Set, error) {}
func (nopPublisher) Fail(error)                   {}
