package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
)

type captureStream struct {
	grpc.ServerStream
	events []*pb.WatchResponse
}

func (c *captureStream) Send(ev *pb.WatchResponse) error { c.events = append(c.events, ev); return nil }

// A one-endpoint change of a 10,000-endpoint target crosses as a delta of
// O(changed) bytes; the host rebuilds exactly the plugin's set from it.
func TestOneEndpointChangeIsSmallOnTheWire(t *testing.T) {
	eps := make([]*core.Endpoint, 10000)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("ep-%d", i), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1)}, Port: 80}
	}
	set, err := core.NewSet(eps...)
	if err != nil {
		t.Fatal(err)
	}
	st := &captureStream{}
	pub := &streamPublisher{stream: st}
	pub.Publish(set)
	e := *eps[42]
	e.Zone = "zone-b"
	next, _ := set.With(&e)
	pub.Publish(next)
	full, delta := proto.Size(st.events[0]), proto.Size(st.events[1])
	t.Logf("first event %d bytes, a one-endpoint change %d bytes", full, delta)
	if delta > 100 || full < 100000 {
		t.Fatalf("event sizes %d (full) and %d (delta)", full, delta)
	}
	cur, err := apply(core.Set{}, false, st.events[0])
	if err != nil {
		t.Fatal(err)
	}
	if cur, err = apply(cur, true, st.events[1]); err != nil || !cur.Equal(next) {
		t.Fatalf("rebuilt set differs (%v)", err)
	}
}

// A port above 65535 from a plugin (a Go plugin cannot send one, a Node or
// Python one can) is rejected with ErrInvalid naming the endpoint, never
// truncated (70000 would become 4464).
func TestPortAboveRangeIsInvalid(t *testing.T) {
	ev := &pb.WatchResponse{Kind: pb.EventKind_EVENT_KIND_PUBLISH, Full: true, Count: 2, Upserts: []*pb.Endpoint{
		{Id: "ok", Addresses: []string{"10.0.0.1"}, Port: 80},
		{Id: "pod-b", Addresses: []string{"10.0.0.2"}, Port: 70000},
	}}
	_, err := apply(core.Set{}, false, ev)
	if !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), `"pod-b"`) || !strings.Contains(err.Error(), "70000") {
		t.Fatalf("apply = %v, want ErrInvalid naming pod-b and its port", err)
	}
	_, err = wireFromPB(&pb.UpdateRequest{Target: &pb.Target{Name: "t"}, Epoch: "e", Seq: 1, Count: 1,
		Added: []*pb.Endpoint{{Addresses: []string{"10.0.0.3"}, Port: 70000}}})
	if !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), "10.0.0.3") {
		t.Fatalf("wireFromPB = %v, want ErrInvalid naming the endpoint", err)
	}
}

// Errors round-trip as data: kind, marks, delay and resync.
func TestErrorsRoundTrip(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("x: %w", core.ErrUnavailable),
		fmt.Errorf("x: %w", core.ErrNotFound),
		core.Retry(fmt.Errorf("x: %w", core.ErrInvalid), 0),
		core.Permanent(errors.New("x")),
		core.Retry(errors.New("x"), 2*time.Second),
		fmt.Errorf("x: %w", core.ErrResync),
	} {
		got := errorFromPB("p", errorToPB(err))
		d1, ok1 := core.RetryDelay(err)
		d2, ok2 := core.RetryDelay(got)
		if core.KindOf(got) != core.KindOf(err) || core.IsPermanent(got) != core.IsPermanent(err) ||
			errors.Is(got, core.ErrResync) != errors.Is(err, core.ErrResync) || d1 != d2 || ok1 != ok2 {
			t.Errorf("%v crossed as %v", err, got)
		}
	}
	if errorFromPB("p", nil) != nil || errorToPB(nil) != nil {
		t.Fatal("nil does not cross as nil")
	}
}

// The runner kills through the process handle: once the process was
// reaped, Kill signals nothing (a PID taken from elsewhere could be reused
// by another process by then).
func TestRunnerKillsThroughTheProcessHandle(t *testing.T) {
	r := newProcRunner("/bin/sleep", []string{"30"}, nil, zap.NewNop())
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, r.Stderr())
	if err := r.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(context.Background()); err == nil {
		t.Fatal("a killed sleep exited 0")
	}
	if !strings.Contains(r.exit(), "signal: killed") {
		t.Fatalf("exit %q, want the signal", r.exit())
	}
	if err := r.Kill(context.Background()); err != nil {
		t.Fatalf("Kill after the process was reaped = %v, want nothing signalled", err)
	}
}
