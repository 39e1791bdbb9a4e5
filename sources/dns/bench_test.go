package dns_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sources/dns"
)

// countingPub counts the source's publishes: with a TTL of 0 and a tiny
// floor, one per refresh.
type countingPub struct {
	n    atomic.Int64
	done chan struct{}
	want int64
}

func (p *countingPub) Publish(s core.Set) {
	if p.n.Add(1) == p.want {
		close(p.done)
	}
}
func (p *countingPub) PublishStale(core.Set, error) {}
func (p *countingPub) Fail(err error)               { panic(err) }

// BenchmarkSRVRefresh200: one refresh of a 200-target SRV name with TTL 0
// against an in-process server answering each query after 1 ms (a round
// trip): its time and its queries, with the targets' addresses in the
// additional section (glue) and without.
func BenchmarkSRVRefresh200(b *testing.B) {
	for _, glue := range []bool{false, true} {
		b.Run(fmt.Sprintf("glue=%v", glue), func(b *testing.B) {
			f := newFake(b)
			f.with(func(f *fake) { f.delay = time.Millisecond })
			name := "_grpc._tcp.fleet.test."
			srvFleet(b, f, name, 200, 0, glue)
			src := sourceAt(b, f.addr, dns.WithTTLBounds(time.Nanosecond, time.Second))
			tg, err := src.Target(name[:len(name)-1])
			if err != nil {
				b.Fatal(err)
			}
			pub := &countingPub{done: make(chan struct{}), want: int64(b.N) + 1}
			ctx, cancel := context.WithCancel(context.Background())
			ended := make(chan struct{})
			go func() { defer close(ended); _ = src.Watch(ctx, tg, pub) }()
			for pub.n.Load() < 1 { // the first refresh is not timed
				time.Sleep(time.Millisecond)
			}
			before := f.total()
			b.ResetTimer()
			<-pub.done
			b.StopTimer()
			cancel()
			<-ended
			b.ReportMetric(float64(f.total()-before)/float64(b.N), "queries/refresh")
		})
	}
}
