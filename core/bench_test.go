package core_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/wire"
)

// capture is a source that hands each target's Publisher to the benchmark.
type capture struct {
	mu   sync.Mutex
	pubs map[core.Target]core.Publisher
	all  chan struct{}
	want int
}

func newCapture(want int) *capture {
	return &capture{pubs: map[core.Target]core.Publisher{}, all: make(chan struct{}), want: want}
}

func (c *capture) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	c.mu.Lock()
	c.pubs[t] = pub
	if len(c.pubs) == c.want {
		close(c.all)
	}
	c.mu.Unlock()
	<-ctx.Done()
	return nil
}

func bigSet(b *testing.B, n int) core.Set {
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{
			ID: fmt.Sprintf("pod-%05d", i), Name: fmt.Sprintf("greeter-%05d", i),
			Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)}, Port: 50051,
			Zone: fmt.Sprintf("zone-%d", i%3), Node: fmt.Sprintf("node-%d", i%50),
		}
	}
	s, err := core.NewSet(eps...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkPublishOneChange10kTo3Sinks: one endpoint of a 10,000-endpoint
// target flips readiness; the time until all three sinks have accepted it.
func BenchmarkPublishOneChange10kTo3Sinks(b *testing.B) {
	const n = 10000
	target := core.Target{Name: "big"}
	src := newCapture(1)
	got := make(chan int, 3)
	sinks := make([]core.Sink, 3)
	for i := range sinks {
		sinks[i] = core.SinkFunc(func(ctx context.Context, u core.Update) error {
			if len(u.Changed)+len(u.Added) != 1 && u.Seq > 1 {
				return fmt.Errorf("unexpected delta: %d changed %d added", len(u.Changed), len(u.Added))
			}
			got <- len(u.Changed)
			return nil
		})
	}
	stop := subscribeAll(b, src, []core.Target{target}, sinks)
	defer stop()
	<-src.all
	pub := src.pubs[target]
	set := bigSet(b, n)
	pub.Publish(set)
	for range 3 {
		<-got
	}
	ready := []*core.Endpoint{set.At(n / 2), nil}
	unready := *ready[0]
	unready.Conditions.Ready = new(false)
	ready[1] = &unready

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next, err := set.With(ready[(i+1)%2])
		if err != nil {
			b.Fatal(err)
		}
		pub.Publish(next)
		for range 3 {
			if c := <-got; c != 1 {
				b.Fatalf("changed = %d", c)
			}
		}
		set = next
	}
}

// BenchmarkThroughput1000Targets3Sinks publishes 100,000 updates spread over
// 1,000 targets of 10 endpoints and waits until three sinks have accepted the
// final state of every target (intermediate states may coalesce).
func BenchmarkThroughput1000Targets3Sinks(b *testing.B) {
	const targets, updates = 1000, 100000
	ts := make([]core.Target, targets)
	versions := make([][3]core.Set, targets) // two alternating, one final
	for i := range ts {
		ts[i] = core.Target{Namespace: "bench", Name: fmt.Sprintf("svc-%04d", i)}
		for v := range 3 {
			eps := make([]*core.Endpoint, 10)
			for j := range eps {
				eps[j] = &core.Endpoint{ID: fmt.Sprintf("pod-%d", j), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", v, i%250, j)}, Port: 80}
			}
			s, err := core.NewSet(eps...)
			if err != nil {
				b.Fatal(err)
			}
			versions[i][v] = s
		}
	}
	index := make(map[core.Target]int, targets)
	for i, t := range ts {
		index[t] = i
	}
	var delivered atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var total time.Duration
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		src := newCapture(targets)
		finished := make(chan struct{}, 3)
		sinks := make([]core.Sink, 3)
		for s := range sinks {
			done := make([]bool, targets) // only this sink's goroutine touches it
			left := targets
			sinks[s] = core.SinkFunc(func(ctx context.Context, u core.Update) error {
				delivered.Add(1)
				i := index[u.Target]
				if !done[i] && u.State.Endpoints.Equal(versions[i][2]) {
					done[i] = true
					if left--; left == 0 {
						finished <- struct{}{}
					}
				}
				return nil
			})
		}
		stop := subscribeAll(b, src, ts, sinks)
		<-src.all
		pubs := make([]core.Publisher, targets)
		for i, t := range ts {
			pubs[i] = src.pubs[t]
		}
		b.StartTimer()
		start := time.Now()
		for u := range updates - targets {
			i := u % targets
			pubs[i].Publish(versions[i][(u/targets)%2])
		}
		for i := range pubs {
			pubs[i].Publish(versions[i][2])
		}
		for range 3 {
			<-finished
		}
		total += time.Since(start)
		b.StopTimer()
		stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(updates*b.N)/total.Seconds(), "updates/s")
	b.ReportMetric(float64(delivered.Load())/float64(3*updates*b.N), "delivered/update")
}

func BenchmarkDiff10kOneChange(b *testing.B) {
	set := bigSet(b, 10000)
	e := *set.At(5000)
	e.Weight = 7
	next, err := set.With(&e)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d := core.Diff(set, next); len(d.Changed) != 1 {
			b.Fatal("no change")
		}
	}
}

func BenchmarkSetWith10kOneChange(b *testing.B) {
	set := bigSet(b, 10000)
	e := *set.At(5000)
	e.Weight = 7
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := set.With(&e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApply10kOneChange(b *testing.B) {
	set := bigSet(b, 10000)
	e := *set.At(5000)
	e.Weight = 7
	next, err := set.With(&e)
	if err != nil {
		b.Fatal(err)
	}
	d := core.Diff(set, next)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := set.Apply(d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWireDeltaOneChange10k: encode a one-endpoint change of a
// 10,000-endpoint target in the delta form and apply it on a receiver's
// Replica, through JSON: a webhook's or a plugin's cost per change.
func BenchmarkWireDeltaOneChange10k(b *testing.B) {
	set := bigSet(b, 10000)
	target := core.Target{Name: "big"}
	r := wire.NewReplica()
	r.Commit(core.Update{Target: target, Epoch: "e", Seq: 1, State: core.State{Endpoints: set, Synced: true}})
	versions := [2]*core.Endpoint{set.At(5000), nil}
	c := *versions[0]
	c.Weight = 7
	versions[1] = &c
	prev := set
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next, err := prev.With(versions[(i+1)%2])
		if err != nil {
			b.Fatal(err)
		}
		u := core.Update{Target: target, Epoch: "e", Seq: uint64(i + 2), BaseSeq: uint64(i + 1),
			State: core.State{Endpoints: next, Synced: true}, Delta: core.Diff(prev, next)}
		data, err := json.Marshal(wire.From(u, wire.DeltaForm))
		if err != nil {
			b.Fatal(err)
		}
		bytes = len(data)
		w, err := wire.Decode(data)
		if err != nil {
			b.Fatal(err)
		}
		u2, err := r.Next(w)
		if err != nil {
			b.Fatal(err)
		}
		r.Commit(u2)
		prev = next
	}
	b.ReportMetric(float64(bytes), "bytes/update")
}

// subscribeAll subscribes each sink to every target through a new hub over
// src; stop closes the hub.
func subscribeAll(tb testing.TB, src core.Source, targets []core.Target, sinks []core.Sink) (stop func()) {
	hub, err := core.NewHub(src)
	if err != nil {
		tb.Fatal(err)
	}
	for i, sink := range sinks {
		if _, err := hub.Subscribe(fmt.Sprint("sink", i), sink, targets...); err != nil {
			tb.Fatal(err)
		}
	}
	return func() { hub.Close() }
}
