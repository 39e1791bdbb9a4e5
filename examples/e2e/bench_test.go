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
	ch := newChurn(b)
	for i := 0; b.Loop(); i++ {
		ch.step(i, b.StartTimer, b.StopTimer)
	}
	src, d := ch.end()
	pct := func(d []time.Duration, p int) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)-1, len(d)*p/100)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(src, 50), "source-p50-ms")
	b.ReportMetric(pct(src, 99), "source-p99-ms")
	b.ReportMetric(pct(d, 50), "call-p50-ms")
	b.ReportMetric(pct(d, 99), "call-p99-ms")
}

// churn is the scenario of BenchmarkPropagationToPicker: 3 pods under load
// from 8 callers, a pod added and drained at each step.
type churn struct {
	tb     testing.TB
	c      *cluster
	ctx    context.Context
	mu     sync.Mutex
	seen   map[string]time.Time
	stop   func() loadResult
	probe  *core.Subscription
	d, src []time.Duration
}

func newChurn(tb testing.TB) *churn {
	ch := &churn{tb: tb, c: newCluster(tb, 1), ctx: ctxFor(tb, 10*time.Minute), seen: map[string]time.Time{}}
	names := ch.c.startReady("greeter", 0, 3, "")
	client, builder := ch.c.clientAndBuilder()
	waitServingTB(tb, ch.ctx, client, names...)
	probe, err := builder.Hub().Subscribe("probe",
		core.SinkFunc(func(_ context.Context, u core.Update) error {
			ch.mu.Lock()
			defer ch.mu.Unlock()
			for _, e := range u.Added {
				if _, ok := ch.seen[e.Name]; !ok {
					ch.seen[e.Name] = time.Now()
				}
			}
			return nil
		}), core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"})
	if err != nil {
		tb.Fatal(err)
	}
	ch.probe = probe
	ch.stop = startLoad(ch.ctx, client, 8, 0)
	return ch
}

// step adds a ready pod, waits for its first call, then drains it; the
// timed part is between start and pause.
func (ch *churn) step(i int, start, pause func()) {
	pause()
	p := ch.c.startPod(fmt.Sprintf("new-%d", i), "")
	ch.c.set(p.name, true, false)
	start()
	begin := time.Now()
	ch.c.publish()
	for p.srv.First.Load() == 0 {
		if time.Since(begin) > 10*time.Second {
			ch.tb.Fatal("new pod got no call")
		}
		time.Sleep(200 * time.Microsecond)
	}
	ch.d = append(ch.d, time.Unix(0, p.srv.First.Load()).Sub(begin))
	ch.mu.Lock()
	ch.src = append(ch.src, ch.seen[p.name].Sub(begin))
	ch.mu.Unlock()
	pause()
	ch.c.drain(p.name, 300*time.Millisecond)
	start()
}

// end stops the load, fails on any failed call, and returns the
// propagation times to the source and to the first call.
func (ch *churn) end() (src, call []time.Duration) {
	ch.probe.Close()
	if r := ch.stop(); r.failed != 0 {
		ch.tb.Fatalf("%d calls failed: %v", r.failed, r.errs)
	}
	return ch.src, ch.d
}

// The churn benchmark, short, as a regression guard in make test: pods
// added and drained every few hundred milliseconds under load, no call
// failing.
func TestChurnShort(t *testing.T) {
	ch := newChurn(t)
	for i := range 8 {
		ch.step(i, func() {}, func() {})
	}
	src, call := ch.end()
	t.Logf("propagation to the source %v, to the first call %v", src, call)
}
