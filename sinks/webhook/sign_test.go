package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/wire"
	"github.com/disco-lb/disco/sinks/webhook"
)

func mustSecret(t testing.TB, text string) webhook.Secret {
	s, err := webhook.ParseSecret(text)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The Standard Webhooks test vector: secret, id, timestamp and payload give
// the documented signature.
func TestSignMatchesTheStandardVector(t *testing.T) {
	s := mustSecret(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	h := http.Header{}
	webhook.Sign(h, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`), s)
	if got, want := h.Get(webhook.HeaderSignature), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	old, cur, other := mustSecret(t, secret(1)), mustSecret(t, secret(2)), mustSecret(t, secret(3))
	body := []byte(`{"a":1}`)
	now := time.Unix(1_800_000_000, 0)
	signed := func(at time.Time, secrets ...webhook.Secret) http.Header {
		h := http.Header{}
		webhook.Sign(h, "msg_1", at, body, secrets...)
		return h
	}
	for _, tc := range []struct {
		name    string
		h       http.Header
		body    []byte
		secrets []webhook.Secret
		want    error
	}{
		{"signed", signed(now, cur), body, []webhook.Secret{cur}, nil},
		{"rotation: both signatures, old key", signed(now, cur, old), body, []webhook.Secret{old}, nil},
		{"rotation: one signature, either key", signed(now, cur), body, []webhook.Secret{old, cur}, nil},
		{"another key", signed(now, cur), body, []webhook.Secret{other}, webhook.ErrSignature},
		{"body changed", signed(now, cur), []byte(`{"a":2}`), []webhook.Secret{cur}, webhook.ErrSignature},
		{"too old", signed(now.Add(-6*time.Minute), cur), body, []webhook.Secret{cur}, webhook.ErrTimestamp},
		{"from the future", signed(now.Add(6*time.Minute), cur), body, []webhook.Secret{cur}, webhook.ErrTimestamp},
		{"no headers", http.Header{}, body, []webhook.Secret{cur}, webhook.ErrMissingHeaders},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := webhook.Verify(tc.h, tc.body, now, 5*time.Minute, tc.secrets...)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	h := signed(now, cur)
	h.Set(webhook.HeaderSignature, "v2,"+strings.TrimPrefix(h.Get(webhook.HeaderSignature), "v1,"))
	if _, err := webhook.Verify(h, body, now, time.Minute, cur); !errors.Is(err, webhook.ErrSignature) {
		t.Fatalf("a v2 signature was accepted: %v", err)
	}
}

// Rotating the secret loses no delivery: the sender signs with new and
// old while receivers move from old to new.
func TestSecretRotationLosesNoDelivery(t *testing.T) {
	oldS, newS := secret(4), secret(5)
	tg := core.Target{Name: "greeter"}
	hub, src := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
	// Receiver accepts only old; sender signs with new and old.
	rc := newReceiver(t, oldS)
	s := newSender(t, rc.srv.URL, webhook.WithSecrets(newS, oldS), webhook.WithRegisterer(prometheus.NewRegistry()))
	subscribe(t, s, hub, tg)
	rc.waitState(tg, endpoints(t, 1, 3, "0"))
	// A receiver that has moved to new only accepts too.
	rc2 := newReceiver(t, newS)
	subscribe(t, newSender(t, rc2.srv.URL, webhook.WithSecrets(newS, oldS), webhook.WithName("second")), hub, tg)
	for i := 1; i <= 10; i++ {
		set := endpoints(t, 1, 3+i, fmt.Sprint(i))
		src.Set(tg, set)
		rc.waitState(tg, set)
		rc2.waitState(tg, set)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if n := len(rc.applied[tg]); n != 11 {
		t.Fatalf("%d updates applied, want 11 (nothing refused, nothing lost)", n)
	}
}

// The receiver: a replayed request is answered without being applied
// again; garbage, bad signatures and deltas it cannot apply get the
// documented statuses.
func TestReceiverAnswers(t *testing.T) {
	key := mustSecret(t, secret(6))
	var applied atomic.Int32
	now := time.Unix(1_800_000_000, 0)
	r, err := webhook.NewReceiver(func(context.Context, core.Update) error { applied.Add(1); return nil },
		[]string{secret(6)}, webhook.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	tg := core.Target{Name: "greeter"}
	set := endpoints(t, 1, 2, "0")
	full := core.Update{Target: tg, Epoch: "e1", Seq: 3, State: core.State{Synced: true, Endpoints: set}}
	send := func(u core.Update, form wire.Form, key webhook.Secret) int {
		body, _ := json.Marshal(wire.From(u, form))
		h := http.Header{}
		webhook.Sign(h, webhook.MessageID(u), now, body, key)
		code, _ := r.Handle(context.Background(), h, body)
		return code
	}
	if code := send(full, wire.FullForm, key); code != http.StatusNoContent {
		t.Fatalf("full state: %d", code)
	}
	if code := send(full, wire.FullForm, key); code != http.StatusOK || applied.Load() != 1 {
		t.Fatalf("replay: %d, applied %d times", code, applied.Load())
	}
	delta := core.Update{Target: tg, Epoch: "e1", Seq: 9, BaseSeq: 7, State: core.State{Synced: true, Endpoints: set}}
	if code := send(delta, wire.DeltaForm, key); code != webhook.StatusResync {
		t.Fatalf("a delta from a state not held: %d, want %d", code, webhook.StatusResync)
	}
	if code := send(full, wire.FullForm, mustSecret(t, secret(7))); code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", code)
	}
	h := http.Header{}
	webhook.Sign(h, "msg_x", now, []byte("not json"), key)
	if code, msg := r.Handle(context.Background(), h, []byte("not json")); code != http.StatusBadRequest || msg == "" {
		t.Fatalf("garbage: %d %q", code, msg)
	}
}

// Hostile input never panics the receiver, and nothing unsigned is applied.
func FuzzReceiver(f *testing.F) {
	key := secret(8)
	now := time.Unix(1_800_000_000, 0)
	body, _ := json.Marshal(wire.From(core.Update{Target: core.Target{Name: "a"}, Epoch: "e", Seq: 1, State: core.State{Synced: true}}, wire.FullForm))
	h := http.Header{}
	webhook.Sign(h, "msg_1", now, body, mustSecret(f, key))
	f.Add(h.Get(webhook.HeaderID), h.Get(webhook.HeaderTimestamp), h.Get(webhook.HeaderSignature), body)
	f.Add("msg_2", strconv.FormatInt(now.Unix(), 10), "v1,AAAA v1 v2,x ,", []byte(`{"schema":"disco.update.v1"}`))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		var applied int
		r, err := webhook.NewReceiver(func(context.Context, core.Update) error { applied++; return nil },
			[]string{key}, webhook.WithClock(func() time.Time { return now }))
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, sig)
		code, _ := r.Handle(context.Background(), h, body)
		if applied > 0 {
			if _, err := webhook.Verify(h, body, now, 5*time.Minute, mustSecret(t, key)); err != nil || code != http.StatusNoContent {
				t.Fatalf("applied with code %d, verify %v", code, err)
			}
		}
	})
}

// The metrics: deliveries by result, failures by reason, retries, and the
// age of the oldest undelivered state while a receiver is down.
func TestMetrics(t *testing.T) {
	rc := newReceiver(t, secret(0))
	var down atomic.Bool
	down.Store(true)
	rc.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
		if down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return true
		}
		return false
	})
	reg := prometheus.NewRegistry()
	tg := core.Target{Name: "greeter"}
	hub, _ := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
	s := newSender(t, rc.srv.URL, webhook.WithRegisterer(reg), webhook.WithName("m"))
	subscribe(t, s, hub, tg)
	time.Sleep(300 * time.Millisecond)
	oldest := func() float64 {
		n, _ := testutil.GatherAndCount(reg, "disco_webhook_oldest_undelivered_seconds")
		if n != 1 {
			t.Fatalf("%d oldest_undelivered series", n)
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "disco_webhook_oldest_undelivered_seconds" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if v := oldest(); v < 0.2 {
		t.Fatalf("oldest undelivered %.3fs while down 0.3s", v)
	}
	down.Store(false)
	rc.waitState(tg, endpoints(t, 1, 3, "0"))
	time.Sleep(20 * time.Millisecond)
	if v := oldest(); v != 0 {
		t.Fatalf("oldest undelivered %.3fs after delivery", v)
	}
	if v := testutil.ToFloat64(failuresOf(t, reg, "http_5xx")); v < 2 {
		t.Fatalf("failures http_5xx = %v", v)
	}
	for _, name := range []string{"disco_webhook_deliveries_total", "disco_webhook_retries_total", "disco_webhook_request_seconds", "disco_webhook_delivered_bytes_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Fatalf("%s: %d series, %v", name, n, err)
		}
	}
}
