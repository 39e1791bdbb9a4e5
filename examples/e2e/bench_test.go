package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
)

// BenchmarkPropagationToPicker: a service of 3 pods under load from 8
// callers; each iteration adds a ready pod to the slice and measures from
// issuing the slice write to (source) the resolver's hub delivering the new
// endpoint, and (call) the first call the new pod serves: the earliest moment
// its address is observably in the ClientConn's picker, after grpc-go has
// connected to it. Reports p50/p99 in ms. Run with -benchtime=Nx.
func BenchmarkPropagationToPicker(b *testing.B) {
	c := newCluster(b, 1)
	ctx := ctxFor(b, 10*time.Minute)
	names := c.startReady("greeter", 0, 3, "")
	client, builder := c.clientAndBuilder()
	waitServingTB(b, ctx, client, names...)
	var mu sync.Mutex
	seen := map[string]time.Time{}
	probe, err := builder.Hub().Subscribe("probe",
		core.SinkFunc(func(_ context.Context, u core.Update) error {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range u.Added {
				if _, ok := seen[e.Name]; !ok {
					seen[e.Name] = time.Now()
				}
			}
			return nil
		}), core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"})
	if err != nil {
		b.Fatal(err)
	}
	defer probe.Close()
	stop := startLoad(ctx, client, 8, 0)
	var d, src []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		p := c.startPod(fmt.Sprintf("new-%d", i), "")
		c.set(p.name, true, false)
		b.StartTimer()
		begin := time.Now()
		c.publish()
		for p.srv.first.Load() == 0 {
			if time.Since(begin) > 10*time.Second {
				b.Fatal("new pod got no call")
			}
			time.Sleep(200 * time.Microsecond)
		}
		d = append(d, time.Unix(0, p.srv.first.Load()).Sub(begin))
		mu.Lock()
		src = append(src, seen[p.name].Sub(begin))
		mu.Unlock()
		b.StopTimer()
		c.drain(p.name, 300*time.Millisecond)
		b.StartTimer()
	}
	if r := stop(); r.failed != 0 {
		b.Fatalf("%d calls failed: %v", r.failed, r.errs)
	}
	pct := func(d []time.Duration, p int) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)-1, len(d)*p/100)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(src, 50), "source-p50-ms")
	b.ReportMetric(pct(src, 99), "source-p99-ms")
	b.ReportMetric(pct(d, 50), "call-p50-ms")
	b.ReportMetric(pct(d, 99), "call-p99-ms")
}
