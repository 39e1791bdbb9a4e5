package plugin

import (
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
)

type captureStream struct {
	grpc.ServerStream
	events []*pb.SourceEvent
}

func (c *captureStream) Send(ev *pb.SourceEvent) error { c.events = append(c.events, ev); return nil }

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
