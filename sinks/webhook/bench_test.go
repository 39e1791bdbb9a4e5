package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/wire"
	"github.com/disco-lb/disco/sinks/webhook"
)

// Delivery latency on loopback: from publishing a one-endpoint change of
// a 1,000-endpoint target to the receiver (webhook.Receiver: verify,
// decode, apply) having applied it. Goal: p99 ≤ 5 ms in the delta form.
func BenchmarkDelivery(b *testing.B) {
	for _, form := range []struct {
		name string
		f    wire.Form
	}{{"delta", wire.DeltaForm}, {"full", wire.FullForm}} {
		b.Run(form.name+"-1000-endpoints", func(b *testing.B) {
			applied := make(chan string, 16)
			r, err := webhook.NewReceiver(func(_ context.Context, u core.Update) error {
				if e, ok := u.State.Endpoints.Get("ep-1-0"); ok {
					applied <- e.Labels["gen"]
				}
				return nil
			}, []string{secret(0)})
			if err != nil {
				b.Fatal(err)
			}
			var bytes atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				bytes.Add(req.ContentLength)
				r.ServeHTTP(w, req)
			}))
			defer srv.Close()
			tg := core.Target{Name: "greeter"}
			src := coretest.NewStatic(map[core.Target]core.Set{tg: endpoints(b, 1, 1000, "init")})
			hub := coretest.Hub(b, src)
			defer hub.Close()
			s, err := webhook.New(srv.URL, webhook.WithSecrets(secret(0)), webhook.WithForm(form.f))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			sub, err := s.Deliver(hub, tg)
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			for g := range applied {
				if g == "init" {
					break
				}
			}
			sets := [2]core.Set{endpoints(b, 1, 1000, "a"), endpoints(b, 1, 1000, "b")}
			lat := make([]time.Duration, 0, b.N)
			bytes.Store(0)
			b.ResetTimer()
			began := time.Now()
			for i := range b.N {
				want := fmt.Sprint([]string{"a", "b"}[i%2])
				t0 := time.Now()
				src.Set(tg, sets[i%2])
				for g := range applied {
					if g == want {
						break
					}
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(began)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(bytes.Load())/float64(b.N), "bytes/delivery")
		})
	}
}
