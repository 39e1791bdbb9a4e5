package core_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/disco-lb/disco/core"
)

// A source is one method, Watch: publish the complete set whenever it
// changes, Fail when the backend cannot be reached, return when ctx ends.
// This one serves the endpoints of a map and fails with ErrNotFound for a
// target it does not know.
func Example_source() {
	backends := map[string][]string{"greeter": {"10.244.0.2", "10.244.0.3"}}
	src := core.SourceFunc(func(ctx context.Context, t core.Target, pub core.Publisher) error {
		addrs, ok := backends[t.Name]
		if !ok {
			pub.Fail(fmt.Errorf("no service %q: %w", t.Name, core.ErrNotFound))
			<-ctx.Done()
			return nil
		}
		var eps []*core.Endpoint
		for _, a := range addrs {
			eps = append(eps, &core.Endpoint{Addresses: []string{a}, Port: 50051})
		}
		set, err := core.NewSet(eps...) // validates, names a bad endpoint
		if err != nil {
			return err // ErrInvalid: the watch ends, stale with the reason
		}
		pub.Publish(set) // the complete set, never a part
		<-ctx.Done()
		return nil
	})

	hub, err := core.NewHub(src)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer hub.Close()
	for _, name := range []string{"greeter", "missing"} {
		sub, err := hub.Subscribe("example", core.SinkFunc(func(context.Context, core.Update) error { return nil }), core.Target{Name: name})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(name, sub.WaitSynced(context.Background())) // no sleep: wait for the first sync
		sub.Close()
	}
	// Output:
	// greeter <nil>
	// missing core: target missing: no service "missing": target not found
}

// A sink is one method, Accept. Each update embeds the delta from the last
// one this sink accepted (from nothing when BaseSeq is 0): apply it to what
// you hold. Set.Apply already wraps ErrResync when the delta does not fit,
// so returning its error as it is asks core for the full state.
type addressBook struct {
	mu       sync.Mutex
	held     map[core.Target]core.Set
	accepted chan struct{} // a value after each accepted update (for the example)
}

func (b *addressBook) Accept(ctx context.Context, u core.Update) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	base := b.held[u.Target]
	if u.BaseSeq == 0 {
		base = core.Set{} // from nothing: replace what is held
	}
	next, err := base.Apply(u.Delta)
	if err != nil {
		return err // wraps core.ErrResync
	}
	b.held[u.Target] = next
	select {
	case b.accepted <- struct{}{}:
	default:
	}
	return nil
}

func Example_sink() {
	target := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}
	set, _ := core.NewSet(
		&core.Endpoint{ID: "pod-b", Addresses: []string{"10.244.0.3"}, Port: 50051},
		&core.Endpoint{ID: "pod-a", Addresses: []string{"10.244.0.2", "fd00::2"}, Port: 50051},
	)
	src := core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	})
	hub, err := core.NewHub(src)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer hub.Close()

	book := &addressBook{held: map[core.Target]core.Set{}, accepted: make(chan struct{}, 1)}
	sub, err := hub.Subscribe("address-book", book, target) // Subscribe: the one way in
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := sub.WaitSynced(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	<-book.accepted // synced at the hub; the sink, in its own goroutine, has taken it
	sub.Close()

	var lines []string
	for e := range book.held[target].All() {
		lines = append(lines, fmt.Sprint(e.ID, " ", e.HostPorts()))
	}
	sort.Strings(lines)
	fmt.Println(target, lines)
	// Output: demo/greeter:grpc [pod-a [10.244.0.2:50051 [fd00::2]:50051] pod-b [10.244.0.3:50051]]
}

// A hub starts a source's watch of a target when the first subscriber comes
// and stops it when the last one leaves, as a gRPC resolver needs; the
// first update a sink gets is from nothing (BaseSeq 0).
func ExampleHub_Subscribe() {
	target := core.Target{Name: "greeter"}
	set, _ := core.NewSet(&core.Endpoint{Addresses: []string{"10.244.0.2"}, Port: 50051})
	hub, err := core.NewHub(core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer hub.Close()

	got := make(chan core.Update, 1)
	sub, err := hub.Subscribe("example", core.SinkFunc(func(ctx context.Context, u core.Update) error {
		got <- u
		return nil
	}), target)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close() // the last Close stops the watch
	u := <-got
	fmt.Println(u.Seq, u.BaseSeq, len(u.Added), u.State.Endpoints.At(0).ID)
	// Output: 1 0 1 10.244.0.2:50051
}

// Sources build the next set from the previous one: unchanged endpoints stay
// shared, and the diff costs a pointer comparison for each of them.
func ExampleSet_With() {
	v1, _ := core.NewSet(
		&core.Endpoint{ID: "a", Addresses: []string{"10.0.0.1"}},
		&core.Endpoint{ID: "b", Addresses: []string{"10.0.0.2"}},
	)
	v2, _ := v1.Without("a").With(
		&core.Endpoint{ID: "b", Addresses: []string{"10.0.0.2"}, Conditions: core.Conditions{Ready: new(false)}},
		&core.Endpoint{ID: "c", Addresses: []string{"10.0.0.3"}},
	)
	d := core.Diff(v1, v2)
	fmt.Println("added:", d.Added[0].ID, "removed:", d.Removed[0].ID,
		"changed:", d.Changed[0].New.ID, "ready:", d.Changed[0].New.Conditions.IsReady())
	// Output: added: c removed: a changed: b ready: false
}

// Bad input gets an error naming what is wrong.
func ExampleNewSet() {
	_, err := core.NewSet(
		&core.Endpoint{ID: "pod-a", Addresses: []string{"10.0.0.1"}},
		&core.Endpoint{ID: "pod-a", Addresses: []string{"10.0.0.2"}},
	)
	fmt.Println(err)
	// Output: core: duplicate endpoint ID "pod-a": invalid
}

// One rule for sources and sinks: errors are retried with a jittered
// backoff unless classified invalid, not found or forbidden, or marked
// Permanent; Retry overrides a classification and may carry a delay.
func ExampleIsPermanent() {
	unavailable := errors.New("webhook: 503 from receiver")
	invalid := fmt.Errorf("webhook: 400 from receiver: %w", core.ErrInvalid)
	fmt.Println(core.IsPermanent(unavailable), core.IsPermanent(invalid),
		core.IsPermanent(core.Permanent(unavailable)), core.IsPermanent(core.Retry(invalid, 0)),
		core.IsPermanent(fmt.Errorf("wrapped: %w", core.Permanent(unavailable))))
	// Output: false true true false true
}
