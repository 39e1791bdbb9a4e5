package webhook_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/webhook"
)

// Receivers that misbehave: each delivery fails (and is retried) for the
// reason the metrics name, nothing is followed or read beyond limits, and
// once the receiver behaves the final state arrives.
func TestHostileReceivers(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(other.Close)
	var otherHits atomic.Int32
	other.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { otherHits.Add(1) })
	var written atomic.Int64
	for _, tc := range []struct {
		name   string
		hook   func(w http.ResponseWriter, req *http.Request)
		reason string
	}{
		{"redirect", func(w http.ResponseWriter, req *http.Request) {
			http.Redirect(w, req, other.URL, http.StatusTemporaryRedirect)
		}, "redirect"},
		{"endless body", func(w http.ResponseWriter, req *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			chunk := []byte(strings.Repeat("x", 32<<10))
			for req.Context().Err() == nil {
				n, err := w.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		}, "http_5xx"},
		{"hangs", func(w http.ResponseWriter, req *http.Request) {
			<-req.Context().Done()
		}, "timeout"},
		{"trickles", func(w http.ResponseWriter, req *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			for req.Context().Err() == nil {
				if _, err := w.Write([]byte("x")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
			}
		}, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, secret(0))
			var bad atomic.Bool
			bad.Store(true)
			rc.setHook(func(w http.ResponseWriter, req *http.Request) bool {
				if !bad.Load() {
					return false
				}
				tc.hook(w, req)
				return true
			})
			reg := prometheus.NewRegistry()
			tg := core.Target{Name: "greeter"}
			hub, src := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
			s := newSender(t, rc.srv.URL, webhook.WithTimeout(300*time.Millisecond), webhook.WithRegisterer(reg), webhook.WithName("hostile"))
			subscribe(t, s, hub, tg)
			failures := func() float64 {
				return testutil.ToFloat64(failuresOf(t, reg, tc.reason))
			}
			deadline := time.Now().Add(10 * time.Second)
			for failures() < 2 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if failures() < 2 {
				t.Fatalf("no failures counted with reason %q", tc.reason)
			}
			final := endpoints(t, 2, 4, "final")
			src.Set(tg, final)
			bad.Store(false)
			rc.waitState(tg, final)
			if otherHits.Load() != 0 {
				t.Fatal("the redirect was followed")
			}
			if n := written.Load(); n > 8<<20 {
				t.Fatalf("the sender read on: the receiver wrote %d bytes", n)
			}
		})
	}
}

// failuresOf returns the failures_total counter of reason.
func failuresOf(t *testing.T, reg *prometheus.Registry, reason string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "disco_webhook_failures_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" && l.GetValue() == reason {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	})
}

// collectorFunc is a one-value collector for testutil.ToFloat64.
type collectorFunc func() float64

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc() }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(f.desc(), prometheus.GaugeValue, f())
}
func (collectorFunc) desc() *prometheus.Desc { return prometheus.NewDesc("value", "", nil, nil) }

// A receiver that hangs slows no other receiver and no other sink of the
// same hub: they get every change while its deliveries time out.
func TestAHangingReceiverSlowsNoOne(t *testing.T) {
	hanging := newReceiver(t, secret(0))
	hanging.setHook(func(w http.ResponseWriter, req *http.Request) bool {
		<-req.Context().Done()
		return true
	})
	good := newReceiver(t, secret(0))
	tg := core.Target{Name: "greeter"}
	hub, src := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
	subscribe(t, newSender(t, hanging.srv.URL, webhook.WithTimeout(10*time.Second)), hub, tg)
	subscribe(t, newSender(t, good.srv.URL), hub, tg)
	got := make(chan string, 1000)
	sub, err := hub.Subscribe("in-process", core.SinkFunc(func(_ context.Context, u core.Update) error {
		if e, ok := u.State.Endpoints.Get("ep-1-0"); ok {
			got <- e.Labels["gen"]
		}
		return nil
	}), tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	for i := 1; i <= 20; i++ {
		gen := fmt.Sprint(i)
		set := endpoints(t, 1, 3, gen)
		src.Set(tg, set)
		good.waitState(tg, set)
		for g := range got {
			if g == gen {
				break
			}
		}
	}
	if hanging.count() != 1 {
		t.Fatalf("the hanging receiver got %d requests, want the 1 it holds", hanging.count())
	}
}

// TLS with a custom CA: delivered when the sender trusts the CA, refused
// (and retried) when it does not.
func TestTLSWithACustomCA(t *testing.T) {
	r, err := webhook.NewReceiver(func(context.Context, core.Update) error { return nil }, []string{secret(0)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(r)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tg := core.Target{Name: "greeter"}
	hub, _ := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})

	reg := prometheus.NewRegistry()
	logs, observed := observer.New(zapcore.InfoLevel)
	untrusting := newSender(t, srv.URL, webhook.WithRegisterer(reg), webhook.WithLogger(zap.New(logs)))
	subscribe(t, untrusting, hub, tg)
	trusting := newSender(t, srv.URL, webhook.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	subscribe(t, trusting, hub, tg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, ok := r.State(tg); ok && st.Endpoints.Len() == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing delivered over TLS with the CA trusted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for testutil.ToFloat64(failuresOf(t, reg, "tls")) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the sender that does not trust the CA did not fail with reason tls")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := testutil.ToFloat64(failuresOf(t, reg, "network")); n != 0 {
		t.Fatalf("%v TLS failures counted as network", n)
	}
	// The first TLS failure of the run is an error, the retries warnings.
	var errs, warns int
	for _, e := range observed.All() {
		switch {
		case e.Level == zapcore.ErrorLevel && strings.Contains(e.Message, "TLS"):
			errs++
		case e.Level == zapcore.WarnLevel:
			warns++
		}
	}
	if errs != 1 || warns == 0 {
		t.Fatalf("%d error and %d warning log lines for a run of TLS failures, want 1 error then warnings", errs, warns)
	}
}
