package webhook_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/webhook"
)

// A sender re-created with the same name on the same registry, as a
// configuration reload does, works: Close unregisters its collectors; and a
// registration that fails half-way leaves none of them behind.
func TestSenderRecreatedOnTheSameRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	rc := newReceiver(t, secret(0))
	for i := range 3 {
		s, err := webhook.New(rc.srv.URL, webhook.WithSecrets(secret(0)), webhook.WithName("lb"), webhook.WithRegisterer(reg))
		if err != nil {
			t.Fatalf("sender %d: %v", i, err)
		}
		s.Close()
		s.Close() // idempotent
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("%d series left after the senders closed (%v)", n, err)
	}

	// Someone else holds one of the names: New fails, and leaves nothing.
	squatter := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "disco", Subsystem: "webhook", Name: "retries_total",
		ConstLabels: prometheus.Labels{"receiver": "lb"}, Help: "Delivery attempts made after a failed one of the same target."})
	reg.MustRegister(squatter)
	if _, err := webhook.New(rc.srv.URL, webhook.WithSecrets(secret(0)), webhook.WithName("lb"), webhook.WithRegisterer(reg)); err == nil {
		t.Fatal("New succeeded beside a collector of the same name")
	}
	reg.Unregister(squatter)
	s, err := webhook.New(rc.srv.URL, webhook.WithSecrets(secret(0)), webhook.WithName("lb"), webhook.WithRegisterer(reg))
	if err != nil {
		t.Fatalf("New after the failed one: %v (its collectors were left behind)", err)
	}
	s.Close()
}

// A target unsubscribed while its receiver was failing is forgotten:
// oldest_undelivered_seconds goes back to 0 instead of growing for ever,
// and the sender keeps nothing of it.
func TestForgottenTargetsAreForgotten(t *testing.T) {
	rc := newReceiver(t, secret(0))
	rc.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	reg := prometheus.NewRegistry()
	s := newSender(t, rc.srv.URL, webhook.WithRegisterer(reg))
	tg := core.Target{Name: "greeter"}
	hub, _ := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
	sub := subscribe(t, s, hub, tg)
	oldest := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "disco_webhook_oldest_undelivered_seconds" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	deadline := time.Now().Add(10 * time.Second)
	for oldest() <= 0.05 {
		if time.Now().After(deadline) {
			t.Fatal("the failing target never counted as undelivered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sub.Close()
	if v := oldest(); v != 0 {
		t.Fatalf("oldest_undelivered_seconds %v after the target left, want 0", v)
	}
	time.Sleep(100 * time.Millisecond)
	if v := oldest(); v != 0 {
		t.Fatalf("oldest_undelivered_seconds grows to %v for a target that left", v)
	}

	// Memory: 200 targets that came, failed and left leave no record.
	var targets []core.Target
	sets := map[core.Target]core.Set{}
	for i := range 200 {
		tg := core.Target{Name: fmt.Sprintf("t%d", i)}
		targets = append(targets, tg)
		sets[tg] = endpoints(t, 2, 1, "0")
	}
	hub2, _ := hubOf(t, sets)
	sub2 := subscribe(t, s, hub2, targets...)
	for s.Tracked() < 200 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("%d targets tracked, want 200 failing ones", s.Tracked())
		}
		time.Sleep(10 * time.Millisecond)
	}
	sub2.Close()
	if n := s.Tracked(); n != 0 {
		t.Fatalf("the sender keeps records of %d targets that left", n)
	}
}

// A secret printed, formatted or encoded by mistake shows nothing of its
// key; Text is the one way to the key. WithTLS with WithHTTPClient is an
// error at construction (WithTLS would be silently ignored).
func TestSecretsAndOptionConflicts(t *testing.T) {
	sec, err := webhook.ParseSecret(secret(3))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimPrefix(secret(3), "whsec_")
	js, _ := json.Marshal(map[string]any{"s": sec})
	for _, shown := range []string{sec.String(), fmt.Sprint(sec), fmt.Sprintf("%v %+v %#v %s", sec, sec, sec, sec), string(js)} {
		if strings.Contains(shown, key) || strings.Contains(shown, key[:8]) {
			t.Fatalf("the key shows in %q", shown)
		}
	}
	if sec.Text() != secret(3) {
		t.Fatalf("Text() = %q, want the secret's text", sec.Text())
	}
	made, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := webhook.ParseSecret(made.Text()); err != nil || again.Text() != made.Text() {
		t.Fatalf("NewSecret's text does not parse back: %v", err)
	}
	_, err = webhook.New("https://lb.example/", webhook.WithSecrets(secret(0)), webhook.WithHTTPClient(&http.Client{}),
		webhook.WithTLS(&tls.Config{MinVersion: tls.VersionTLS13}))
	if err == nil || !strings.Contains(err.Error(), "WithTLS") || !strings.Contains(err.Error(), "WithHTTPClient") {
		t.Fatalf("New with WithTLS and WithHTTPClient = %v, want an error naming both", err)
	}
}
