package core_test

import (
	"context"
	"fmt"
	"time"

	"github.com/disco-lb/disco/core"
)

// A pipeline connects a source to sinks over a fixed list of targets.
func ExampleNewPipeline() {
	target := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}
	set, err := core.NewSet(
		&core.Endpoint{ID: "pod-b", Addresses: []string{"10.244.0.3"}, Port: 50051},
		&core.Endpoint{ID: "pod-a", Addresses: []string{"10.244.0.2", "fd00::2"}, Port: 50051},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	src := core.NewStatic(map[core.Target]core.Set{target: set})

	got := make(chan core.Update, 1)
	printer := core.SinkFunc(func(ctx context.Context, u core.Update) error {
		got <- u
		return nil
	})
	p := core.NewPipeline(src, []core.Target{target}, []core.NamedSink{core.Named("printer", printer)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go p.Run(ctx)
	defer p.Close()

	if err := p.WaitSynced(ctx, target); err != nil { // no sleep: wait for the first sync
		fmt.Println(err)
		return
	}
	u := <-got
	fmt.Println(u.Target, "synced:", u.State.Synced)
	for _, e := range u.Added {
		fmt.Println("added", e.ID, e.HostPorts())
	}
	// Output:
	// demo/greeter:grpc synced: true
	// added pod-a [10.244.0.2:50051 [fd00::2]:50051]
	// added pod-b [10.244.0.3:50051]
}

// A hub starts a source's watch of a target when the first subscriber comes
// and stops it when the last one leaves, as a gRPC resolver needs.
func ExampleHub_Subscribe() {
	target := core.Target{Name: "greeter"}
	set, _ := core.NewSet(&core.Endpoint{Addresses: []string{"10.244.0.2"}, Port: 50051})
	hub := core.NewHub(core.NewStatic(map[core.Target]core.Set{target: set}))
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
	fmt.Println(u.Seq, u.BaseSeq, u.State.Endpoints.Len(), u.State.Endpoints.At(0).ID)
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
		&core.Endpoint{ID: "b", Addresses: []string{"10.0.0.2"}, Conditions: core.Conditions{Ready: core.Bool(false)}},
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

// A source is one method. This one serves a fixed answer and fails with
// ErrNotFound for any other target.
func ExampleSourceFunc() {
	src := core.SourceFunc(func(ctx context.Context, t core.Target, pub core.Publisher) error {
		if t.Name != "greeter" {
			pub.Fail(fmt.Errorf("no service %q: %w", t.Name, core.ErrNotFound))
			<-ctx.Done()
			return nil
		}
		set, err := core.NewSet(&core.Endpoint{Addresses: []string{"10.244.0.2"}, Port: 50051})
		if err != nil {
			return err
		}
		pub.Publish(set)
		<-ctx.Done()
		return nil
	})
	hub := core.NewHub(src)
	defer hub.Close()
	for _, name := range []string{"greeter", "missing"} {
		sub, _ := hub.Subscribe("example", core.SinkFunc(func(context.Context, core.Update) error { return nil }), core.Target{Name: name})
		fmt.Println(name, sub.WaitSynced(context.Background()))
		sub.Close()
	}
	// Output:
	// greeter <nil>
	// missing core: target missing: no service "missing": target not found
}

// One rule for sources and sinks: errors are retried with a jittered
// backoff unless classified invalid, not found or forbidden, or marked
// Permanent; Retryable overrides a classification.
func ExampleIsPermanent() {
	unavailable := fmt.Errorf("webhook: 503 from receiver")
	invalid := fmt.Errorf("webhook: 400 from receiver: %w", core.ErrInvalid)
	fmt.Println(core.IsPermanent(unavailable), core.IsPermanent(invalid),
		core.IsPermanent(core.Permanent(unavailable)), core.IsPermanent(core.Retryable(invalid)),
		core.IsPermanent(fmt.Errorf("wrapped: %w", core.Permanent(unavailable))))
	// Output: false true true false true
}
