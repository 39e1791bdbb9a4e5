package kubernetes

import (
	"fmt"
	"runtime"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// BenchmarkOneEndpointChange: one endpoint of a 100-endpoint slice flips
// readiness in a service of 1,000 or 10,000 endpoints; the cost of turning
// the slice update into the new published set (compaction, reducer, set).
// It should follow the slice's size, not the service's.
func BenchmarkOneEndpointChange(b *testing.B) {
	for _, total := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("service=%d", total), func(b *testing.B) {
			in := newInterner()
			v := newSvc("grpc")
			slicesOf := make([]*discoveryv1.EndpointSlice, total/100)
			for s := range slicesOf {
				var eps []ep
				for i := range 100 {
					k := s*100 + i
					eps = append(eps, ep{uid: fmt.Sprintf("uid-%05d", k), pod: fmt.Sprintf("greeter-%05d", k),
						addrs: []string{fmt.Sprintf("10.244.%d.%d", k/250, k%250+1)}, zone: fmt.Sprintf("zone-%d", k%3)})
				}
				slicesOf[s] = mkSlice(fmt.Sprintf("greeter-%03d", s), v4, grpc, eps...)
				if _, err := v.put(slicesOf[s].Name, compact(slicesOf[s], in)); err != nil {
					b.Fatal(err)
				}
			}
			target := slicesOf[len(slicesOf)/2]
			flip := []*bool{no, nil}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				target.Endpoints[50].Conditions.Ready = flip[i%2]
				changed, err := v.put(target.Name, compact(target, in))
				if err != nil || !changed {
					b.Fatalf("changed=%v err=%v", changed, err)
				}
			}
		})
	}
}

func heapInUse() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}

// BenchmarkRetained10k: heap kept for 10,000 endpoints in 100 slices with
// realistic names (36-character UIDs, 25-character pod names), split into
// the endpoints themselves (what a sink's state holds; the source's slice
// data is these very endpoints) and what the source keeps beyond them (its
// per-target index and set). Compare: a full EndpointSlice object of 100
// endpoints is about 57 KiB in an untransformed informer cache.
func BenchmarkRetained10k(b *testing.B) {
	for b.Loop() {
		in := newInterner()
		objs := make([]*discoveryv1.EndpointSlice, 100)
		for s := range objs {
			var eps []ep
			for i := range 100 {
				k := s*100 + i
				eps = append(eps, ep{uid: fmt.Sprintf("%08x-1b2c-4d5e-8f90-%012x", k, k), pod: fmt.Sprintf("greeter-7d9f8b6c5-%05d", k),
					addrs: []string{fmt.Sprintf("10.244.%d.%d", k/250, k%250+1)}, zone: fmt.Sprintf("zone-%d", k%3), node: fmt.Sprintf("node-%d", k%50)})
			}
			objs[s] = mkSlice(fmt.Sprintf("greeter-%03d", s), v4, grpc, eps...)
		}
		h0 := heapInUse()
		svc := newSvc("grpc")
		for _, o := range objs {
			svc.all[o.Name] = compact(o, in)
		}
		h1 := heapInUse()
		for name, d := range svc.all {
			if _, err := svc.v.apply(svc.all, name, nil, d); err != nil {
				b.Fatal(err)
			}
		}
		h2 := heapInUse()
		b.ReportMetric((h1-h0)/10000, "endpoint-B/endpoint")
		b.ReportMetric((h2-h1)/10000, "index-B/endpoint")
		b.ReportMetric((h2-h1)/100/1024, "index-KiB/100-endpoint-slice")
		runtime.KeepAlive(objs)
		runtime.KeepAlive(svc)
	}
}
