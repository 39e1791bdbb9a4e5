package plugin_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/plugin"
)

// tickerSource publishes, for target "n<count>", count endpoints, then
// changes one of them every port milliseconds (default 1): its label "t"
// carries the time of the change, so a sink measures how long the change
// took to reach it.
type tickerSource struct{}

func (tickerSource) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	n, _ := strconv.Atoi(t.Name[1:])
	every := time.Millisecond
	if ms, err := strconv.Atoi(t.Port); err == nil {
		every = time.Duration(ms) * time.Millisecond
	}
	if every == 0 { // as fast as it can
		every = time.Nanosecond
	}
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("ep-%d", i), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1)}, Port: 80}
	}
	set, err := core.NewSet(eps...)
	if err != nil {
		return err
	}
	pub.Publish(set)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		e := *eps[0]
		e.Labels = map[string]string{"t": strconv.FormatInt(time.Now().UnixNano(), 10)}
		if set, err = set.With(&e); err != nil {
			return err
		}
		pub.Publish(set)
	}
}

func benchSource(b *testing.B, where string) core.Source {
	if where == "in-process" {
		return tickerSource{}
	}
	b.Setenv("DISCO_TEST_PLUGIN", "ticker")
	src, err := plugin.NewSource(self(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	return src
}

// Per-update latency of a one-endpoint change, from the source's Publish
// to a sink of the host's hub, in process and through a plugin, at 100,
// 1,000 and 10,000 endpoints (one change every 2 ms).
func BenchmarkUpdateLatency(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, where := range []string{"in-process", "plugin"} {
			b.Run(fmt.Sprintf("%s-%d", where, n), func(b *testing.B) {
				src := benchSource(b, where)
				hub := coretest.Hub(b, src)
				defer hub.Close()
				lat := make(chan time.Duration, 1<<16)
				sub, err := hub.Subscribe("bench", core.SinkFunc(func(_ context.Context, u core.Update) error {
					if e, ok := u.State.Endpoints.Get("ep-0"); ok && e.Labels["t"] != "" {
						ns, _ := strconv.ParseInt(e.Labels["t"], 10, 64)
						select {
						case lat <- time.Since(time.Unix(0, ns)):
						default:
						}
					}
					return nil
				}), core.Target{Name: fmt.Sprintf("n%d", n), Port: "2"})
				if err != nil {
					b.Fatal(err)
				}
				defer sub.Close()
				b.ResetTimer()
				got := make([]time.Duration, 0, b.N)
				for range b.N {
					got = append(got, <-lat)
				}
				b.StopTimer()
				slices.Sort(got)
				b.ReportMetric(float64(got[len(got)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(got[len(got)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}

// From NewSource (the plugin process started, handshake, AutoMTLS) to the
// first synced state of a 1,000-endpoint target at the hub, against the
// same source in process.
func BenchmarkStartToSynced(b *testing.B) {
	for _, where := range []string{"in-process", "plugin"} {
		b.Run(where, func(b *testing.B) {
			b.Setenv("DISCO_TEST_PLUGIN", "ticker")
			for range b.N {
				var src core.Source = tickerSource{}
				var closer func() error
				if where == "plugin" {
					s, err := plugin.NewSource(self(b))
					if err != nil {
						b.Fatal(err)
					}
					src, closer = s, s.Close
				}
				hub := coretest.Hub(b, src)
				tg := core.Target{Name: "n1000", Port: "1000"}
				sub, err := hub.Subscribe("bench", core.SinkFunc(func(context.Context, core.Update) error { return nil }), tg)
				if err != nil {
					b.Fatal(err)
				}
				if err := sub.WaitSynced(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				sub.Close()
				hub.Close()
				if closer != nil {
					closer()
				}
				b.StartTimer()
			}
		})
	}
}

// Updates per second through one plugin: the source publishes as fast as
// its ticker allows (every 1 ms is the floor here), the host counts what it
// receives; and the host's heap in use with a 10,000-endpoint target.
func BenchmarkHostHeap(b *testing.B) {
	src := benchSource(b, "plugin")
	hub := coretest.Hub(b, src)
	defer hub.Close()
	sub, err := hub.Subscribe("bench", core.SinkFunc(func(context.Context, core.Update) error { return nil }), core.Target{Name: "n10000", Port: "1000"})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	if err := sub.WaitSynced(context.Background()); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(m.HeapInuse)/(1<<20), "host-heap-MiB")
	for _, pid := range childrenOf(os.Getpid()) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			var kb float64
			if _, err := fmt.Sscanf(line, "VmRSS: %f kB", &kb); err == nil {
				b.ReportMetric(kb/1024, "plugin-RSS-MiB")
			}
		}
	}
}

// countingPublisher counts what a watch publishes.
type countingPublisher struct{ n atomic.Int64 }

func (c *countingPublisher) Publish(core.Set)             { c.n.Add(1) }
func (c *countingPublisher) PublishStale(core.Set, error) { c.n.Add(1) }
func (c *countingPublisher) Fail(error)                   { c.n.Add(1) }

// Updates per second through one plugin: the source publishes one-endpoint
// changes of a 1,000-endpoint target as fast as it can; the host's
// Publisher counts what arrives.
func BenchmarkUpdatesPerSecond(b *testing.B) {
	for _, where := range []string{"in-process", "plugin"} {
		b.Run(where, func(b *testing.B) {
			src := benchSource(b, where)
			pub := &countingPublisher{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Watch(ctx, core.Target{Name: "n1000", Port: "0"}, pub) }()
			for pub.n.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			b.ResetTimer()
			began, start := time.Now(), pub.n.Load()
			for pub.n.Load()-start < int64(b.N) {
				time.Sleep(100 * time.Microsecond)
			}
			elapsed := time.Since(began)
			b.StopTimer()
			cancel()
			<-done
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
		})
	}
}
