package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func secret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b%26)), 32)))
}

// receiver is a real HTTP server on loopback running webhook.Receiver,
// with a hook that can answer instead (down, slow, hostile), and a record
// of every applied update.
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	r   *webhook.Receiver

	mu       sync.Mutex
	hook     func(w http.ResponseWriter, req *http.Request) bool // true: answered
	applied  map[core.Target][]core.Update
	requests int
	ids      []string
}

func newReceiver(t *testing.T, secrets ...string) *receiver {
	t.Helper()
	rc := &receiver{t: t, applied: map[core.Target][]core.Update{}}
	r, err := webhook.NewReceiver(func(_ context.Context, u core.Update) error {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.applied[u.Target] = append(rc.applied[u.Target], u)
		return nil
	}, secrets)
	if err != nil {
		t.Fatal(err)
	}
	rc.r = r
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rc.mu.Lock()
		rc.requests++
		rc.ids = append(rc.ids, req.Header.Get(webhook.HeaderID))
		hook := rc.hook
		rc.mu.Unlock()
		// Read the body first, so the server notices a client that gives
		// up (a hook waiting on the request's context is woken).
		readBody(t, req)
		if hook != nil && hook(w, req) {
			return
		}
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) setHook(h func(w http.ResponseWriter, req *http.Request) bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.hook = h
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

func (rc *receiver) updates(t core.Target) []core.Update {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.applied[t])
}

// waitState waits until the receiver holds exactly set for t (synced, fresh).
func (rc *receiver) waitState(t core.Target, set core.Set) {
	rc.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, ok := rc.r.State(t)
		if ok && st.Synced && !st.Stale.IsStale() && st.Endpoints.Equal(set) {
			return
		}
		if time.Now().After(deadline) {
			rc.t.Fatalf("receiver never held the final state of %s: holds %d endpoints (ok %v), want %d", t, st.Endpoints.Len(), ok, set.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkOrdered fails if an epoch's seq ever went backwards or repeated in
// what the receiver applied for t.
func (rc *receiver) checkOrdered(t core.Target) {
	rc.t.Helper()
	last := map[string]uint64{}
	for _, u := range rc.updates(t) {
		if u.Seq <= last[u.Epoch] {
			rc.t.Fatalf("%s: seq %d applied after %d in epoch %s", t, u.Seq, last[u.Epoch], u.Epoch)
		}
		last[u.Epoch] = u.Seq
	}
}

// newSender returns a sender to rc with a short schedule, closed at the end.
func newSender(t *testing.T, url string, opts ...webhook.Option) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(url, append([]webhook.Option{webhook.WithSecrets(secret(0)),
		webhook.WithTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// hubOf returns a hub over a static source holding sets, with a short
// retry schedule, closed at the end.
func hubOf(t *testing.T, sets map[core.Target]core.Set) (*core.Hub, *coretest.Static) {
	t.Helper()
	src := coretest.NewStatic(sets)
	return coretest.Hub(t, src, core.WithBackoff(10*time.Millisecond, 100*time.Millisecond)), src
}

func subscribe(t *testing.T, s *webhook.Sender, hub *core.Hub, targets ...core.Target) *webhook.Delivery {
	t.Helper()
	sub, err := s.Deliver(hub, targets...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// endpoints returns a set of n endpoints 10.<net>.x.y:80, the first with a
// label gen.
func endpoints(t testing.TB, net, n int, gen string) core.Set {
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("ep-%d-%d", net, i), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", net, i/250, i%250+1)}, Port: 80}
	}
	if n > 0 {
		eps[0].Labels = map[string]string{"gen": gen}
	}
	return coretest.Set(t, eps...)
}

// readBody reads a request's body and puts it back for the next reader.
func readBody(t *testing.T, req *http.Request) []byte {
	data, err := io.ReadAll(req.Body)
	if err != nil {
		t.Error(err)
	}
	req.Body = io.NopCloser(bytes.NewReader(data))
	return data
}
