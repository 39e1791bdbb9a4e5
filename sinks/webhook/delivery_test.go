package webhook_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/wire"
	"github.com/disco-lb/disco/sinks/webhook"
)

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A receiver down for a long outage while a target changes thousands of
// times: it ends with the exact final state, the sender's memory does not
// grow with the number of changes, and seq never goes backwards.
func TestFinalStateAfterALongOutage(t *testing.T) {
	for name, form := range map[string]wire.Form{"full": wire.FullForm, "delta": wire.DeltaForm} {
		t.Run(name, func(t *testing.T) {
			rc := newReceiver(t, secret(0))
			tg := core.Target{Name: "greeter"}
			hub, src := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 100, "0")})
			s := newSender(t, rc.srv.URL, webhook.WithForm(form))
			subscribe(t, s, hub, tg)
			rc.waitState(tg, endpoints(t, 1, 100, "0"))

			var down atomic.Bool
			down.Store(true)
			rc.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
				if down.Load() {
					http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
					return true
				}
				return false
			})
			change := func(from, to int) {
				for i := from; i < to; i++ {
					src.Set(tg, endpoints(t, 1+i%3, 100+i%7, fmt.Sprint(i)))
				}
			}
			change(1, 1000)
			before := heap()
			change(1000, 5000)
			grew := int64(heap()) - int64(before)
			t.Logf("heap grew %d bytes over 4,000 changes while the receiver was down (%d requests refused)", grew, rc.count())
			if grew > 512<<10 {
				t.Fatalf("heap grew %d bytes over 4,000 changes: the sender keeps what it could not deliver", grew)
			}
			final := endpoints(t, 2, 103, "final")
			src.Set(tg, final)
			time.Sleep(200 * time.Millisecond)
			down.Store(false)
			rc.waitState(tg, final)
			rc.checkOrdered(tg)
		})
	}
}

// Deliveries of one target are ordered and one at a time; a target whose
// deliveries hang holds up no other.
func TestOrderedPerTargetAndIndependent(t *testing.T) {
	rc := newReceiver(t, secret(0))
	targets := []core.Target{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "slow"}}
	sets := map[core.Target]core.Set{}
	for i, tg := range targets {
		sets[tg] = endpoints(t, i+1, 10, "0")
	}
	hub, src := hubOf(t, sets)
	var mu sync.Mutex
	inflight, most := map[string]int{}, map[string]int{}
	release := make(chan struct{})
	rc.setHook(func(w http.ResponseWriter, req *http.Request) bool {
		var body struct {
			Target core.Target `json:"target"`
		}
		// Peek at the target: the body is read again by the receiver.
		data := readBody(t, req)
		_ = json.Unmarshal(data, &body)
		name := body.Target.Name
		mu.Lock()
		inflight[name]++
		most[name] = max(most[name], inflight[name])
		mu.Unlock()
		defer func() { mu.Lock(); inflight[name]--; mu.Unlock() }()
		if name == "slow" {
			<-release
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		if rand.IntN(5) == 0 {
			http.Error(w, "flaky", http.StatusInternalServerError)
			return true
		}
		return false
	})
	s := newSender(t, rc.srv.URL, webhook.WithTimeout(30*time.Second))
	subscribe(t, s, hub, targets...)
	defer close(release)
	var last map[core.Target]core.Set
	for i := 1; i <= 200; i++ {
		last = map[core.Target]core.Set{}
		for j, tg := range targets {
			set := endpoints(t, j+1, 5+i%10, fmt.Sprint(i))
			src.Set(tg, set)
			last[tg] = set
		}
		time.Sleep(time.Millisecond)
	}
	for _, tg := range targets[:3] {
		rc.waitState(tg, last[tg]) // while "slow" hangs
		rc.checkOrdered(tg)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, n := range most {
		if n > 1 {
			t.Fatalf("target %s had %d requests in flight at once", name, n)
		}
	}
}

// webhook-id is the same for every retry of a delivery, new for the next
// seq and for a resync, and holds no '.'.
func TestMessageIDIsStableAcrossRetries(t *testing.T) {
	rc := newReceiver(t, secret(0))
	var fails atomic.Int32
	fails.Store(3)
	rc.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
		if fails.Add(-1) >= 0 {
			http.Error(w, "not yet", http.StatusBadGateway)
			return true
		}
		return false
	})
	tg := core.Target{Name: "greeter"}
	hub, _ := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
	s := newSender(t, rc.srv.URL)
	subscribe(t, s, hub, tg)
	rc.waitState(tg, endpoints(t, 1, 3, "0"))
	rc.mu.Lock()
	ids := append([]string(nil), rc.ids...)
	rc.mu.Unlock()
	if len(ids) != 4 {
		t.Fatalf("%d requests, want 3 failed and 1 accepted: %v", len(ids), ids)
	}
	for _, id := range ids {
		if id != ids[0] || strings.Contains(id, ".") || !strings.HasPrefix(id, "msg_") {
			t.Fatalf("ids %v: want one id, without '.'", ids)
		}
	}
	u := core.Update{Target: tg, Epoch: "e", Seq: 7, BaseSeq: 5}
	next, resync := u, u
	next.Seq, resync.BaseSeq = 8, 0
	if webhook.MessageID(u) == webhook.MessageID(next) || webhook.MessageID(u) == webhook.MessageID(resync) {
		t.Fatal("the next seq, or a resync, has the same id")
	}
}

// In the delta form a one-endpoint change of a 10,000-endpoint target is a
// small request; a receiver that lost its state answers 409 and gets the
// full state.
func TestDeltaFormAndResync(t *testing.T) {
	rc := newReceiver(t, secret(0))
	var sizes []int
	var mu sync.Mutex
	rc.setHook(func(w http.ResponseWriter, req *http.Request) bool {
		mu.Lock()
		sizes = append(sizes, int(req.ContentLength))
		mu.Unlock()
		return false
	})
	tg := core.Target{Name: "big"}
	big := endpoints(t, 1, 10000, "0")
	hub, src := hubOf(t, map[core.Target]core.Set{tg: big})
	s := newSender(t, rc.srv.URL, webhook.WithForm(wire.DeltaForm))
	subscribe(t, s, hub, tg)
	rc.waitState(tg, big)
	changed := endpoints(t, 1, 10000, "1")
	src.Set(tg, changed)
	rc.waitState(tg, changed)
	mu.Lock()
	first, delta := sizes[0], sizes[len(sizes)-1]
	mu.Unlock()
	t.Logf("first delivery %d bytes, a one-endpoint change %d bytes", first, delta)
	if delta > 1024 || first < 100*delta {
		t.Fatalf("a one-endpoint change took %d bytes (the first delivery %d)", delta, first)
	}

	rc.r.Forget() // the receiver restarted
	again := endpoints(t, 1, 10000, "2")
	src.Set(tg, again)
	rc.waitState(tg, again)
	mu.Lock()
	n := len(sizes)
	last3 := sizes[n-2:]
	mu.Unlock()
	if last3[0] > 1024 || last3[1] < first/2 {
		t.Fatalf("after the receiver lost its state: requests of %v bytes, want a delta then the full state", last3)
	}
}

// 429 and 503 with Retry-After: the next attempt waits that long, though
// the sender's own schedule is shorter.
func TestRetryAfterIsHonoured(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			rc := newReceiver(t, secret(0))
			var mu sync.Mutex
			var times []time.Time
			rc.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				times = append(times, time.Now())
				if len(times) == 1 {
					w.Header().Set("Retry-After", "1")
					http.Error(w, "slow down", code)
					return true
				}
				return false
			})
			tg := core.Target{Name: "greeter"}
			hub, _ := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
			s := newSender(t, rc.srv.URL)
			subscribe(t, s, hub, tg)
			rc.waitState(tg, endpoints(t, 1, 3, "0"))
			mu.Lock()
			defer mu.Unlock()
			if gap := times[1].Sub(times[0]); gap < 950*time.Millisecond {
				t.Fatalf("retried after %s, Retry-After said 1s", gap)
			}
		})
	}
}

// 410 Gone stops delivery to that receiver for good, with a clear error.
func TestGoneStopsDelivery(t *testing.T) {
	rc := newReceiver(t, secret(0))
	rc.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "this endpoint was retired", http.StatusGone)
		return true
	})
	tg := core.Target{Name: "greeter"}
	hub, src := hubOf(t, map[core.Target]core.Set{tg: endpoints(t, 1, 3, "0")})
	s := newSender(t, rc.srv.URL)
	subscribe(t, s, hub, tg)
	deadline := time.Now().Add(10 * time.Second)
	for s.Gone() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Gone(); err == nil || !strings.Contains(err.Error(), "410") || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("Gone() = %v", err)
	}
	n := rc.count()
	for i := range 20 {
		src.Set(tg, endpoints(t, 1, 4+i, fmt.Sprint(i)))
	}
	time.Sleep(300 * time.Millisecond)
	if m := rc.count(); m != n {
		t.Fatalf("%d more requests after 410 Gone", m-n)
	}
}

// New refuses what cannot work, saying what is wrong.
func TestNewChecksItsInput(t *testing.T) {
	for _, tc := range []struct {
		url  string
		opts []webhook.Option
		want string
	}{
		{"ftp://x/", []webhook.Option{webhook.WithSecrets(secret(0))}, "http:// or https://"},
		{"http://", []webhook.Option{webhook.WithSecrets(secret(0))}, "a host"},
		{"http://x/", nil, "no signing secret"},
		{"http://x/", []webhook.Option{webhook.WithSecrets("whsec_!!")}, "not base64"},
		{"http://x/", []webhook.Option{webhook.WithSecrets("whsec_c2hvcnQ=")}, "24 to 64"},
	} {
		if _, err := webhook.New(tc.url, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q) = %v, want an error saying %q", tc.url, err, tc.want)
		}
	}
}
