package file_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/file"
)

// The ways programs write a file, as the source sees them.

// writeInPlace truncates the file and writes it (os.WriteFile, `cat >`).
func writeInPlace(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeRename writes a temporary file beside path and renames it over path
// (atomic writers, most configuration tools).
func writeRename(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// editorSave saves as vim does with backupcopy=no: the file renamed to a
// backup, a new file created and written, synced, the backup removed. For
// a moment the file does not exist.
func editorSave(t testing.TB, path string, data []byte) {
	t.Helper()
	backup := path + "~"
	if err := os.Rename(path, backup); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// Written in two parts, as editors write buffers.
	half := len(data) / 2
	if _, err := f.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(backup); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// configMap updates a file the way the kubelet updates a ConfigMap volume
// (AtomicWriter): the data goes into a new hidden directory
// ..<timestamp>, a link ..data_tmp to it is renamed over ..data, and the
// old directory is removed; the visible file is a link to ..data/<name>,
// made once.
func configMap(t testing.TB, path string, data []byte) {
	t.Helper()
	dir, name := filepath.Dir(path), filepath.Base(path)
	ts, err := os.MkdirTemp(dir, "..2026_12_03_")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", name), path); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

var writers = []struct {
	name  string
	write func(testing.TB, string, []byte)
}{
	{"in place", writeInPlace},
	{"write and rename", writeRename},
	{"editor save", editorSave},
	{"ConfigMap ..data swap", configMap},
}

// Every writer pattern, 60 changes in quick succession between a file of
// 40 endpoints and one of 25: every state the sink sees is one of the two
// whole files (never a part, never empty, never stale), and the last one
// written is the last one published.
func TestEveryWriterIsReadWhole(t *testing.T) {
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "greeter.yaml")
			a, b := addrs(1, 40), addrs(2, 25)
			files := [][]byte{discoFile("greeter", a...), discoFile("greeter", b...)}
			w.write(t, path, files[0])
			src := newSource(t, dir)
			tg := core.Target{Name: "greeter"}
			_, rec := coretest.Watch(t, src, tg)
			waitFor(t, rec, tg, a...)
			for i := 1; i <= 60; i++ {
				w.write(t, path, files[i%2])
				time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
			}
			w.write(t, path, files[1])
			waitFor(t, rec, tg, b...)
			seen := 0
			for _, u := range rec.For(tg) {
				got := coretest.HostPorts(u.State.Endpoints)
				if !u.State.Synced || u.State.Stale.IsStale() || !(slices.Equal(got, sorted(a)) || slices.Equal(got, sorted(b))) {
					t.Fatalf("published a state that is neither file: synced %v stale %q, %d endpoints", u.State.Synced, u.State.Stale.Reason, len(got))
				}
				seen++
			}
			if seen < 3 {
				t.Fatalf("only %d states published for 61 changes", seen)
			}
			t.Logf("%d states published for 61 changes", seen)
		})
	}
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// A ConfigMap volume mounted as a directory holds ..data, ..<timestamp>
// and links: only the links are read, and a key's removal removes its
// target.
func TestConfigMapDirectory(t *testing.T) {
	dir := t.TempDir()
	configMap(t, filepath.Join(dir, "greeter.yaml"), discoFile("greeter", "10.6.0.1:80"))
	src := newSource(t, dir, file.WithGrace(20*time.Millisecond))
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "10.6.0.1:80")
	configMap(t, filepath.Join(dir, "greeter.yaml"), discoFile("greeter", "10.6.0.2:80", "10.6.0.3:80"))
	waitFor(t, rec, tg, "10.6.0.2:80", "10.6.0.3:80")
	for _, u := range rec.For(tg) {
		if u.State.Stale.IsStale() {
			t.Fatalf("stale during the swap: %q", u.State.Stale.Reason)
		}
	}
}

// An editor that leaves swap and backup files (.greeter.yaml.swp,
// greeter.yaml~, 4913) beside the file: none of them is read.
func TestEditorDebrisIsIgnored(t *testing.T) {
	dir := t.TempDir()
	writeRename(t, filepath.Join(dir, "greeter.yaml"), discoFile("greeter", "10.7.0.1:80"))
	for _, junk := range []string{".greeter.yaml.swp", "greeter.yaml~", "4913", "#greeter.yaml#", "README.md"} {
		writeInPlace(t, filepath.Join(dir, junk), []byte("targets: ["))
	}
	src := newSource(t, dir)
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "10.7.0.1:80")
}

// Change-to-publish latency: from a file's rename into place to the sink
// holding its endpoints. Goal: p99 ≤ 50 ms.
func BenchmarkChangeToPublish(b *testing.B) {
	for _, w := range writers {
		b.Run(strings.ReplaceAll(w.name, " ", "-"), func(b *testing.B) {
			dir := b.TempDir()
			path := filepath.Join(dir, "greeter.yaml")
			w.write(b, path, discoFile("greeter", addrs(1, 100)...))
			src, err := file.New(dir)
			if err != nil {
				b.Fatal(err)
			}
			hub := coretest.Hub(b, src)
			defer hub.Close()
			got := make(chan string, 1024)
			sub, err := hub.Subscribe("bench", core.SinkFunc(func(_ context.Context, u core.Update) error {
				if e, ok := u.State.Endpoints.Get("10.200.0.1:80"); ok {
					got <- e.Labels["gen"]
				}
				return nil
			}), core.Target{Name: "greeter"})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			var lat []time.Duration
			b.ResetTimer()
			for i := range b.N {
				gen := fmt.Sprint(i)
				data := fmt.Appendf(discoFile("greeter", addrs(1, 100)...),
					"      - {addresses: [10.200.0.1], port: 80, labels: {gen: %q}}\n", gen)
				began := time.Now()
				w.write(b, path, data)
				for g := range got {
					if g == gen {
						break
					}
				}
				lat = append(lat, time.Since(began))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		})
	}
}

// BenchmarkLargeFileOneEndpointChange: a file of 100,000 endpoints (2.6 MB,
// the short form) in which one endpoint changes, written by rename: the
// time from the write to a sink holding the change, and the memory the
// process allocates per change (parse, set, diff, delivery).
func BenchmarkLargeFileOneEndpointChange(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	path := filepath.Join(dir, "big.yaml")
	base := discoFile("big", addrs(1, n-1)...)
	writeRename(b, path, fmt.Appendf(slices.Clone(base), "      - {addresses: [10.200.0.1], port: 80, labels: {gen: \"-1\"}}\n"))
	src, err := file.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	hub := coretest.Hub(b, src)
	defer hub.Close()
	got := make(chan string, 1024)
	sub, err := hub.Subscribe("bench", core.SinkFunc(func(_ context.Context, u core.Update) error {
		if e, ok := u.State.Endpoints.Get("10.200.0.1:80"); ok {
			got <- e.Labels["gen"]
		}
		return nil
	}), core.Target{Name: "big"})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	for g := range got {
		if g == "-1" {
			break
		}
	}
	var lat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		gen := fmt.Sprint(i)
		data := fmt.Appendf(slices.Clone(base), "      - {addresses: [10.200.0.1], port: 80, labels: {gen: %q}}\n", gen)
		began := time.Now()
		writeRename(b, path, data)
		for g := range got {
			if g == gen {
				break
			}
		}
		lat = append(lat, time.Since(began))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
