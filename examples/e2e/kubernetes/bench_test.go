package kubernetes_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// benchNamespace makes namespace "bench" with the Service, and an admin
// client.
func benchNamespace(b *testing.B, cp *kubetest.ControlPlane, service string) (context.Context, string, *k8s.Clientset) {
	b.Helper()
	ctx := context.Background()
	if err := cp.EnsureNamespace(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	cs, err := cp.AdminClient()
	if err != nil {
		b.Fatal(err)
	}
	e := &env{t: b, cp: cp, cs: cs, ns: "bench"}
	e.service(service)
	return ctx, "bench", cs
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkPropagation1000: a service of 1,000 endpoints in 10 slices; each
// iteration flips one endpoint's readiness with an Update. Measured from
// issuing the write to (floor) a bare client-go watch on the same API server
// receiving the event, and (source) a core sink receiving the new state.
// Reports p50/p99 of both, in ms. Run with -benchtime=Nx.
func BenchmarkPropagation1000(b *testing.B) {
	cp := kubetest.New(b)
	ctx, ns, cs := benchNamespace(b, cp, "greeter")
	api := cs.DiscoveryV1().EndpointSlices(ns)
	all := pods("p", 1000, 0)
	var objs []*discoveryv1.EndpointSlice
	for s := range 10 {
		o, err := api.Create(ctx, slice("greeter", fmt.Sprintf("greeter-%d", s), v4, grpcPort, all[s*100:(s+1)*100]...), metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		objs = append(objs, o)
	}

	// The floor: a bare watch of the same slices.
	w, err := api.Watch(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=greeter", ResourceVersion: objs[9].ResourceVersion})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()

	// The source, through a core hub, to a sink that signals every state.
	got := make(chan core.State, 1024)
	src := newSource(b, cp.AdminConfig())
	hub := coretest.Hub(b, src)
	defer hub.Close()
	sub, err := hub.Subscribe("bench",
		core.SinkFunc(func(_ context.Context, u core.Update) error { got <- u.State; return nil }),
		core.Target{Namespace: ns, Name: "greeter", Port: "grpc"})
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.WaitSynced(ctx); err != nil {
		b.Fatal(err)
	}
	for st := range got {
		if st.Endpoints.Len() == 1000 {
			break
		}
	}

	var floor, source []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := objs[i%10]
		k := (i / 10) % 100
		ready := i/1000%2 == 1 // alternate per full pass: every write is a change
		o.Endpoints[k].Conditions.Ready = &ready
		uid := string(o.Endpoints[k].TargetRef.UID)
		begin := time.Now()
		updated, err := api.Update(ctx, o, metav1.UpdateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		objs[i%10] = updated
		var fDone, sDone bool
		for !fDone || !sDone {
			select {
			case ev := <-w.ResultChan():
				if ev.Type == watch.Modified && ev.Object.(*discoveryv1.EndpointSlice).ResourceVersion == updated.ResourceVersion {
					floor = append(floor, time.Since(begin))
					fDone = true
				}
			case st := <-got:
				if ep, ok := st.Endpoints.Get(uid); ok && ep.Conditions.IsReady() == ready {
					source = append(source, time.Since(begin))
					sDone = true
				}
			case <-time.After(10 * time.Second):
				b.Fatal("no event")
			}
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(percentile(floor, 0.5)), "floor-p50-ms")
	b.ReportMetric(ms(percentile(floor, 0.99)), "floor-p99-ms")
	b.ReportMetric(ms(percentile(source, 0.5)), "source-p50-ms")
	b.ReportMetric(ms(percentile(source, 0.99)), "source-p99-ms")
}

// BenchmarkSync10k: 10,000 endpoints in 100 slices of 100. Each iteration
// starts a new source and waits for the first synced state of all 10,000.
// Reports the time to sync and the heap the source and its published state
// retain per endpoint (after GC, source running, state held by the hub).
func BenchmarkSync10k(b *testing.B) {
	cp := kubetest.New(b)
	ctx, _, cs := benchNamespace(b, cp, "big")
	api := cs.DiscoveryV1().EndpointSlices("bench")
	all := pods("p", 10000, 0)
	for s := range 100 {
		if _, err := api.Create(ctx, slice("big", fmt.Sprintf("big-%03d", s), v4, grpcPort, all[s*100:(s+1)*100]...), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	var syncTotal time.Duration
	var retained float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		done := make(chan struct{})
		var once bool
		b.StartTimer()
		begin := time.Now()
		src := newSource(b, cp.AdminConfig())
		hub := coretest.Hub(b, src)
		_, err := hub.Subscribe("bench",
			core.SinkFunc(func(_ context.Context, u core.Update) error {
				if !once && u.State.Endpoints.Len() == 10000 {
					once = true
					close(done)
				}
				return nil
			}), core.Target{Namespace: "bench", Name: "big", Port: "grpc"})
		if err != nil {
			b.Fatal(err)
		}
		<-done
		syncTotal += time.Since(begin)
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		retained += float64(after.HeapAlloc) - float64(before.HeapAlloc)
		hub.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(syncTotal.Milliseconds())/float64(b.N), "ms/sync")
	b.ReportMetric(retained/float64(b.N)/10000, "B/endpoint")
	b.ReportMetric(retained/float64(b.N)/100/1024, "KiB/100-endpoint-slice")
}

// BenchmarkRecoveryAfterRestart: the API server is killed (SIGKILL) and
// kept down for 1, 4 or 12 s in turn, so that the source's backoff builds up
// (list attempts 0.8 s, 1.6 s, ... up to 12.8 s apart after a 12 s outage),
// then started again. Measured from the first 200 of /readyz (polled every
// 10 ms) to the source's state being fresh again (a complete relist
// applied; time taken when the sink gets it). Reports p50 and max in ms.
// Run with -benchtime=Nx.
func BenchmarkRecoveryAfterRestart(b *testing.B) {
	cp := kubetest.New(b, kubetest.WithAPIServerArgs("--shutdown-delay-duration=0s"))
	ctx, ns, cs := benchNamespace(b, cp, "greeter")
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice("greeter", "greeter-0", v4, grpcPort, pods("p", 100, 0)...), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	src := newSource(b, cp.AdminConfig(), kubernetes.WithServiceLookup(false))
	hub := coretest.Hub(b, src)
	defer hub.Close()
	type stamped struct {
		st core.State
		at time.Time
	}
	states := make(chan stamped, 1024)
	if _, err := hub.Subscribe("bench", core.SinkFunc(func(_ context.Context, u core.Update) error {
		states <- stamped{u.State, time.Now()}
		return nil
	}), core.Target{Namespace: ns, Name: "greeter", Port: "grpc"}); err != nil {
		b.Fatal(err)
	}
	until := func(ok func(core.State) bool) time.Time {
		for {
			select {
			case s := <-states:
				if ok(s.st) {
					return s.at
				}
			case <-time.After(2 * time.Minute):
				b.Fatal("state never reached")
			}
		}
	}
	readyz := func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil
	}
	until(func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 100 })
	outages := []time.Duration{time.Second, 4 * time.Second, 12 * time.Second}
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		if err := cp.StopAPIServer(false); err != nil {
			b.Fatal(err)
		}
		until(func(s core.State) bool { return s.Stale.IsStale() })
		time.Sleep(outages[i%len(outages)])
		readyAt := make(chan time.Time, 1)
		go func() {
			for !readyz(ctx) {
				time.Sleep(10 * time.Millisecond)
			}
			readyAt <- time.Now()
		}()
		if err := cp.StartAPIServer(ctx); err != nil {
			b.Fatal(err)
		}
		fresh := until(func(s core.State) bool { return !s.Stale.IsStale() && s.Endpoints.Len() == 100 })
		took = append(took, fresh.Sub(<-readyAt))
	}
	b.ReportMetric(float64(percentile(took, 0.5).Microseconds())/1000, "ready-to-fresh-p50-ms")
	b.ReportMetric(float64(slices.Max(took).Microseconds())/1000, "ready-to-fresh-max-ms")
}
