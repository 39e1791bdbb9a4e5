package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/goleak"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/etcd"
	"github.com/disco-lb/disco/sources/etcd/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's client keeps a resolver goroutine per client until Close.
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

// harness drives the real etcd under core's source conformance suite; the
// source reaches etcd through a proxy that Break cuts.
type harness struct {
	srv    *etcdtest.Server
	proxy  *etcdtest.Proxy
	client *clientv3.Client
	src    *etcd.Source
	n      atomic.Int32
}

func newHarness(t *testing.T) *harness {
	srv := etcdtest.Start(t)
	h := &harness{srv: srv, proxy: srv.Proxy(), client: srv.Client()}
	src, err := etcd.New([]string{h.proxy.Addr()}, etcd.WithUnreachableAfter(500*time.Millisecond), etcd.WithBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	h.src = src
	return h
}

func (h *harness) Source() core.Source { return h.src }
func (h *harness) NewTarget(t *testing.T) core.Target {
	return core.Target{Name: fmt.Sprintf("svc%d", h.n.Add(1))}
}

// Write replaces every key of the target in one transaction: one revision.
func (h *harness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := h.client.Get(ctx, tg.Name+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var ops []clientv3.Op
	keep := map[string]bool{}
	for _, b := range bs {
		key := tg.Name + "/" + b.HostPort() // one key per backend
		keep[key] = true
		ops = append(ops, clientv3.OpPut(key, b.HostPort()))
	}
	for _, kv := range cur.Kvs {
		if !keep[string(kv.Key)] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	if len(ops) == 0 {
		return
	}
	if _, err := h.client.Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
}
func (h *harness) Break(t *testing.T) bool { h.proxy.Cut(); return true }
func (h *harness) Heal(t *testing.T)       { h.proxy.Restore() }
func (h *harness) Missing(t *testing.T) (core.Target, error, bool) {
	return core.Target{Name: "nosuch"}, nil, true // no key: synced and empty
}
func (h *harness) Timeout() time.Duration { return 15 * time.Second }
func (h *harness) IgnoreGoroutines() []string {
	return []string{"go.etcd.io/etcd/client", "google.golang.org/grpc"}
}

func TestPassesTheSourceSuite(t *testing.T) { coretest.TestSource(t, newHarness(t)) }

// watch subscribes a recorder to target through a new hub.
func watch(t *testing.T, src core.Source, target string) *coretest.Recorder {
	t.Helper()
	tg, err := etcd.ParseTarget(target)
	if err != nil {
		t.Fatal(err)
	}
	_, rec := coretest.Watch(t, src, tg)
	return rec
}

// until waits for the newest state to satisfy ok.
func until(t *testing.T, rec *coretest.Recorder, what string, ok func(core.State) bool) core.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last core.State
	if err := rec.WaitFor(ctx, func(us []core.Update) bool {
		if len(us) == 0 {
			return false
		}
		last = us[len(us)-1].State
		return ok(last)
	}); err != nil {
		t.Fatalf("%s: not reached; last state %+v", what, last)
	}
	return last
}

func addrs(s core.Set) string {
	var out []string
	for e := range s.All() {
		out = append(out, e.HostPort())
	}
	return strings.Join(out, ",")
}

// A service registered with etcd's own endpoints.Manager (as a user of
// etcd's gRPC resolver does) is discovered as it is.
func TestEtcdNamingRegistrations(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	src := must(etcd.NewForClient(c))
	em, err := endpoints.NewManager(c, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := em.AddEndpoint(ctx, "greeter/a", endpoints.Endpoint{Addr: "10.0.0.1:50051"}); err != nil {
		t.Fatal(err)
	}
	rec := watch(t, src, "greeter")
	until(t, rec, "the registered endpoint", func(s core.State) bool { return s.Synced && addrs(s.Endpoints) == "10.0.0.1:50051" })
	if err := em.AddEndpoint(ctx, "greeter/b", endpoints.Endpoint{Addr: "10.0.0.2:50051", Metadata: map[string]string{"zone": "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := em.DeleteEndpoint(ctx, "greeter/a"); err != nil {
		t.Fatal(err)
	}
	until(t, rec, "a replaced by b", func(s core.State) bool { return addrs(s.Endpoints) == "10.0.0.2:50051" })
}

// A registration whose lease expires leaves the set when etcd deletes it.
func TestLeaseExpiry(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	rec := watch(t, must(etcd.NewForClient(c)), "svc")
	ctx := context.Background()
	lease, err := c.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "svc/short", "10.0.0.1:80", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "svc/long", "10.0.0.2:80"); err != nil {
		t.Fatal(err)
	}
	until(t, rec, "both", func(s core.State) bool { return s.Endpoints.Len() == 2 })
	began := time.Now()
	until(t, rec, "the expired one gone", func(s core.State) bool { return addrs(s.Endpoints) == "10.0.0.2:80" && !s.Stale.IsStale() })
	t.Logf("the registration with a 2 s lease left the set %v after it was last seen", time.Since(began).Round(10*time.Millisecond))
}

// A malformed value: an error naming its key, the other endpoints kept;
// fixed, the state is fresh again.
func TestMalformedValue(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	rec := watch(t, must(etcd.NewForClient(c)), "svc")
	ctx := context.Background()
	for k, v := range map[string]string{"svc/a": "10.0.0.1:80", "svc/b": `{"Op":0,"Addr":"10.0.0.2`} {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	st := until(t, rec, "stale with a", func(s core.State) bool { return s.Stale.IsStale() && addrs(s.Endpoints) == "10.0.0.1:80" })
	if st.Stale.Kind != core.KindInvalid || !strings.Contains(st.Stale.Reason, "etcd: key svc/b: not etcd naming JSON") {
		t.Fatalf("staleness %+v: want it to name svc/b", st.Stale)
	}
	if _, err := c.Put(ctx, "svc/b", `{"Op":0,"Addr":"10.0.0.2:80"}`); err != nil {
		t.Fatal(err)
	}
	until(t, rec, "fresh with both", func(s core.State) bool { return !s.Stale.IsStale() && s.Endpoints.Len() == 2 })
}

// A compaction while the source is cut off: the watch cannot resume from
// its revision; a complete read reconciles exactly (the delete it missed
// applied), and the set was never empty meanwhile.
func TestCompactionDuringADisconnect(t *testing.T) {
	h := newHarness(t)
	rec := watch(t, h.src, "svc")
	ctx := context.Background()
	for i := range 3 {
		if _, err := h.client.Put(ctx, fmt.Sprintf("svc/%d", i), fmt.Sprintf("10.0.0.%d:80", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	until(t, rec, "three", func(s core.State) bool { return s.Endpoints.Len() == 3 })
	from := len(rec.Updates())
	h.proxy.Cut()
	until(t, rec, "stale while cut off", func(s core.State) bool { return s.Stale.IsStale() && s.Endpoints.Len() == 3 })
	if _, err := h.client.Delete(ctx, "svc/0"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Put(ctx, "svc/3", "10.0.0.9:80"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // revisions past the source's, then compacted away
		if _, err := h.client.Put(ctx, "other", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	h.srv.Compact(ctx)
	h.proxy.Restore()
	until(t, rec, "exact after the compaction", func(s core.State) bool {
		return !s.Stale.IsStale() && addrs(s.Endpoints) == "10.0.0.2:80,10.0.0.3:80,10.0.0.9:80"
	})
	for _, u := range rec.Updates()[from:] {
		if u.State.Endpoints.Len() == 0 {
			t.Fatalf("an empty set was published: %+v", u.State)
		}
	}
}

// etcd killed and restarted while registrations change: stale meanwhile
// (never empty), exact after.
func TestEtcdKilledAndRestarted(t *testing.T) {
	srv := etcdtest.Start(t)
	src := must(etcd.New([]string{srv.Addr()}, etcd.WithUnreachableAfter(500*time.Millisecond), etcd.WithBackoff(50*time.Millisecond, 500*time.Millisecond)))
	t.Cleanup(func() { src.Close() })
	c := srv.Client()
	rec := watch(t, src, "svc")
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.Put(ctx, fmt.Sprintf("svc/%d", i), fmt.Sprintf("10.0.0.%d:80", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	until(t, rec, "three", func(s core.State) bool { return s.Endpoints.Len() == 3 })
	from := len(rec.Updates())
	srv.Kill()
	until(t, rec, "stale while etcd is down", func(s core.State) bool { return s.Stale.IsStale() && s.Endpoints.Len() == 3 })
	srv.Start()
	c2 := srv.Client()
	if _, err := c2.Delete(ctx, "svc/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Put(ctx, "svc/4", "10.0.0.7:80"); err != nil {
		t.Fatal(err)
	}
	until(t, rec, "exact after the restart", func(s core.State) bool {
		return !s.Stale.IsStale() && addrs(s.Endpoints) == "10.0.0.1:80,10.0.0.3:80,10.0.0.7:80"
	})
	for _, u := range rec.Updates()[from:] {
		if u.State.Endpoints.Len() == 0 {
			t.Fatalf("an empty set was published: %+v", u.State)
		}
	}
}

// TLS with a client certificate, username and password, and several
// endpoints (one of them dead).
func TestTLSAuthAndSeveralEndpoints(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.WithTLS())
	admin := srv.Client()
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "reader", "svc/", clientv3.GetPrefixRangeEnd("svc/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "disco", "s3cret"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "disco", "reader"); return err },
		func() error { _, err := admin.Put(ctx, "svc/a", "10.0.0.1:80"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	dead := "127.0.0.1:1"
	src := must(etcd.New([]string{dead, srv.Addr()}, etcd.WithTLS(srv.TLS().Config), etcd.WithAuth("disco", "s3cret")))
	t.Cleanup(func() { src.Close() })
	rec := watch(t, src, "svc")
	until(t, rec, "read over TLS as disco", func(s core.State) bool { return s.Synced && addrs(s.Endpoints) == "10.0.0.1:80" })

	// A wrong password, no endpoint: New says so.
	if _, err := etcd.New([]string{srv.Addr()}, etcd.WithTLS(srv.TLS().Config), etcd.WithAuth("disco", "wrong")); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("a wrong password: %v", err)
	}
	if _, err := etcd.New(nil); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("no endpoint: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
