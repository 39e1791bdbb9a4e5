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

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

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
	ctx := context.Background()
	ns := "bench"
	if err := cp.EnsureNamespace(ctx, ns); err != nil {
		b.Fatal(err)
	}
	cs, err := cp.AdminClient()
	if err != nil {
		b.Fatal(err)
	}
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
	hub := core.NewHub(src)
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
	ctx := context.Background()
	if err := cp.EnsureNamespace(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	cs, err := cp.AdminClient()
	if err != nil {
		b.Fatal(err)
	}
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
		hub := core.NewHub(src)
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
