package wire_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/wire"
)

// schemaExample returns the JSON block after <!-- example:name --> in SCHEMA.md.
func schemaExample(t *testing.T, name string) string {
	t.Helper()
	doc, err := os.ReadFile("SCHEMA.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- example:" + name + " -->\n```json\n(.*?)\n```").FindSubmatch(doc)
	if m == nil {
		t.Fatalf("SCHEMA.md has no example %q", name)
	}
	return string(m[1])
}

func indent(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The documented examples are exactly what the code writes, and decode back.
func TestSchemaExamples(t *testing.T) {
	target := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}
	a := &core.Endpoint{ID: "6f1d0c9a-1b2c-4d3e-8f90-a1b2c3d4e5f6", Name: "greeter-7d9f8-abcde",
		Addresses: []string{"10.244.0.12", "fd00::12"}, Port: 50051, Node: "node-a", Zone: "zone-a", ZoneHints: []string{"zone-a"}}
	b := &core.Endpoint{ID: "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4", Name: "greeter-7d9f8-fghij",
		Addresses: []string{"10.244.0.13"}, Port: 50051, Node: "node-b", Zone: "zone-b"}
	bDraining := *b
	bDraining.Conditions = core.Conditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
	v6 := coretest.Set(t, a, b)
	v7 := coretest.Set(t, a, &bDraining)
	since := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	full := core.Update{
		Target: target, Epoch: "5f0c2a9e71d3b846", Seq: 7, BaseSeq: 6,
		State: core.State{Endpoints: v7, Synced: true, Stale: core.Staleness{Since: since,
			Reason: "kubernetes: watch endpointslices.discovery.k8s.io in namespace demo: connection refused: backend unavailable",
			Kind:   core.KindUnavailable}},
		Delta: core.Diff(v6, v7),
	}
	if got, want := indent(t, wire.From(full, wire.FullForm)), schemaExample(t, "full"); got != want {
		t.Fatalf("the full form =\n%s\nSCHEMA.md says\n%s", got, want)
	}
	v8 := coretest.Set(t, a)
	delta := core.Update{Target: target, Epoch: full.Epoch, Seq: 8, BaseSeq: 7,
		State: core.State{Endpoints: v8, Synced: true}, Delta: core.Diff(v7, v8)}
	if got, want := indent(t, wire.From(delta, wire.DeltaForm)), schemaExample(t, "delta"); got != want {
		t.Fatalf("delta form =\n%s\nSCHEMA.md says\n%s", got, want)
	}

	// A receiver that held seq 6 rebuilds both updates exactly.
	r := wire.NewReplica()
	r.Commit(core.Update{Target: target, Epoch: full.Epoch, Seq: 6, State: core.State{Endpoints: v6, Synced: true}})
	for _, doc := range []string{schemaExample(t, "full"), schemaExample(t, "delta")} {
		w, err := wire.Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := next(r, w); err != nil {
			t.Fatal(err)
		}
	}
	st, epoch, seq, _ := r.State(target)
	if !st.Endpoints.Equal(v8) || epoch != full.Epoch || seq != 8 || st.Stale.IsStale() {
		t.Fatalf("replica holds %v epoch %s seq %d stale %v", ids(st.Endpoints), epoch, seq, st.Stale)
	}
}

func TestFreshStateOmitsStale(t *testing.T) {
	u := core.Update{Target: svc, Epoch: "e", Seq: 1, State: core.State{Endpoints: coretest.Set(t, ep("a", "1")), Synced: true}}
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{`"stale"`, `"ended"`, `"baseSeq"`, `"conditions"`} {
		if bytes.Contains(b, []byte(absent)) {
			t.Errorf("%s written for a fresh state: %s", absent, b)
		}
	}
	empty := core.Update{Target: svc, Epoch: "e", Seq: 2, State: core.State{Synced: true}}
	if b, _ := json.Marshal(empty); !bytes.Contains(b, []byte(`"endpoints":[]`)) {
		t.Errorf("an empty full state must say endpoints: []: %s", b)
	}
}

func TestDeltaFormIsProportionalToTheChange(t *testing.T) {
	eps := make([]*core.Endpoint, 10000)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("pod-%05d", i), Name: fmt.Sprintf("greeter-%05d", i),
			Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)}, Port: 50051, Zone: "zone-a"}
	}
	big := coretest.Set(t, eps...)
	e := *big.At(5000)
	e.Conditions.Ready = new(false)
	next, err := big.With(&e)
	if err != nil {
		t.Fatal(err)
	}
	u := core.Update{Target: svc, Epoch: "5f0c2a9e71d3b846", Seq: 2, BaseSeq: 1,
		State: core.State{Endpoints: next, Synced: true}, Delta: core.Diff(big, next)}
	d, _ := json.Marshal(wire.From(u, wire.DeltaForm))
	f, _ := json.Marshal(wire.From(u, wire.FullForm))
	t.Logf("one-endpoint change of 10,000: delta form %d bytes, full form %d bytes", len(d), len(f))
	if len(d) > 400 || len(f) < 100*len(d) {
		t.Fatalf("delta form %d bytes, full %d: the delta form must carry only the change", len(d), len(f))
	}
}

func TestReplica(t *testing.T) {
	s1 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
	s2 := coretest.Set(t, ep("a", "1"), ep("b", "2", "fd00::2"), ep("c", "3"))
	s3 := coretest.Set(t, ep("c", "3"))
	upd := func(epoch string, seq, base uint64, prev, next core.Set) core.Update {
		return core.Update{Target: svc, Epoch: epoch, Seq: seq, BaseSeq: base,
			State: core.State{Endpoints: next, Synced: true}, Delta: core.Diff(prev, next)}
	}
	type step struct {
		w       wire.Message
		wantErr error // nil: applied
		want    core.Set
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "deltas chain", steps: []step{
			{w: wire.From(upd("e1", 1, 0, core.Set{}, s1), wire.DeltaForm), want: s1},
			{w: wire.From(upd("e1", 3, 1, s1, s2), wire.DeltaForm), want: s2},
			{w: wire.From(upd("e1", 4, 3, s2, s3), wire.DeltaForm), want: s3},
		}},
		{name: "a retry or a late update is a duplicate", steps: []step{
			{w: wire.From(upd("e1", 2, 0, core.Set{}, s1), wire.FullForm), want: s1},
			{w: wire.From(upd("e1", 2, 0, core.Set{}, s1), wire.FullForm), wantErr: wire.ErrDuplicate, want: s1},
			{w: wire.From(upd("e1", 1, 0, core.Set{}, s3), wire.FullForm), wantErr: wire.ErrDuplicate, want: s1},
		}},
		{name: "a delta from another base asks for a resync", steps: []step{
			{w: wire.From(upd("e1", 1, 0, core.Set{}, s1), wire.DeltaForm), want: s1},
			{w: wire.From(upd("e1", 5, 4, s2, s3), wire.DeltaForm), wantErr: core.ErrResync, want: s1},
			{w: wire.From(upd("e1", 6, 0, core.Set{}, s3), wire.DeltaForm), want: s3}, // the resync
		}},
		{name: "a new epoch: a delta needs a resync, a full state replaces", steps: []step{
			{w: wire.From(upd("e1", 9, 0, core.Set{}, s1), wire.FullForm), want: s1},
			{w: wire.From(upd("e2", 2, 1, s1, s2), wire.DeltaForm), wantErr: core.ErrResync, want: s1},
			{w: wire.From(upd("e2", 1, 0, core.Set{}, s3), wire.FullForm), want: s3},
		}},
		{name: "nothing held: a delta needs a resync", steps: []step{
			{w: wire.From(upd("e1", 2, 1, s1, s2), wire.DeltaForm), wantErr: core.ErrResync},
		}},
		{name: "a delta that does not land on count", steps: []step{
			{w: wire.From(upd("e1", 1, 0, core.Set{}, s1), wire.DeltaForm), want: s1},
			{w: func() wire.Message { w := wire.From(upd("e1", 2, 1, s1, s2), wire.DeltaForm); w.Count = 7; return w }(),
				wantErr: core.ErrResync, want: s1},
		}},
		{name: "a delta removing what is not held", steps: []step{
			{w: wire.From(upd("e1", 1, 0, core.Set{}, s3), wire.DeltaForm), want: s3},
			{w: wire.From(upd("e1", 2, 1, s1, s3), wire.DeltaForm), wantErr: core.ErrResync, want: s3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := wire.NewReplica()
			for i, s := range tt.steps {
				// Through JSON, as a webhook receiver gets it.
				b, err := json.Marshal(s.w)
				if err != nil {
					t.Fatal(err)
				}
				w, err := wire.Decode(b)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				u, err := r.Next(w)
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: Next = %v, want %v", i, err, s.wantErr)
					}
				} else if err != nil {
					t.Fatalf("step %d: %v", i, err)
				} else {
					prev, _, _, _ := r.State(svc)
					got, err := prev.Endpoints.Apply(u.Delta)
					if u.BaseSeq == 0 {
						got, err = core.Set{}.Apply(u.Delta)
					}
					if err != nil || !got.Equal(u.State.Endpoints) {
						t.Fatalf("step %d: the Update's delta does not lead from what was held to its state: %v", i, err)
					}
					r.Commit(u)
				}
				st, _, _, _ := r.State(svc)
				if !st.Endpoints.Equal(s.want) {
					t.Fatalf("step %d: replica holds %v, want %v", i, ids(st.Endpoints), ids(s.want))
				}
			}
		})
	}
}

func TestDecodeWireErrors(t *testing.T) {
	good := `{"schema":"disco.update.v1","target":{"name":"greeter"},"epoch":"e","seq":2,"baseSeq":1,"synced":true,"count":1,"added":[{"id":"a","addresses":["10.0.0.1"]}]}`
	if _, err := wire.Decode([]byte(good)); err != nil {
		t.Fatalf("good update refused: %v", err)
	}
	if _, err := wire.Decode([]byte(strings.Replace(good, `"disco.update.v1"`, `"disco.update.v1.3"`, 1))); err != nil {
		t.Fatalf("a later v1 minor refused: %v", err)
	}
	if _, err := wire.Decode([]byte(strings.Replace(good, `"synced":true`, `"synced":true,"future":{"x":1}`, 1))); err != nil {
		t.Fatalf("an unknown field refused: %v", err)
	}
	tests := []struct{ name, in, want string }{
		{"not json", `{"schema":`, "decode update"},
		{"other schema", strings.Replace(good, "disco.update.v1", "disco.update.v2", 1), `schema "disco.update.v2"`},
		{"no schema", strings.Replace(good, `"schema":"disco.update.v1",`, "", 1), `schema ""`},
		{"no target name", strings.Replace(good, `"name":"greeter"`, `"name":""`, 1), "no target name"},
		{"no epoch", strings.Replace(good, `"epoch":"e"`, `"epoch":""`, 1), "no epoch"},
		{"seq 0", strings.Replace(good, `"seq":2,"baseSeq":1`, `"seq":0`, 1), "seq 0"},
		{"base not below seq", strings.Replace(good, `"baseSeq":1`, `"baseSeq":2`, 1), "baseSeq 2 not below seq"},
		{"bad endpoint", strings.Replace(good, `"addresses":["10.0.0.1"]`, `"addresses":[]`, 1), `added: core: endpoint "a": no address`},
		{"endpoint without id", strings.Replace(good, `"id":"a",`, "", 1), "added: endpoint without id"},
		{"id twice", strings.Replace(good, `"count":1`, `"count":1,"removed":["a"]`, 1), `endpoint "a" both in added and removed`},
		{"full set does not match count", strings.Replace(good, `"count":1`, `"count":2,"endpoints":[{"id":"a","addresses":["1"]}]`, 1), "count 2 but 1 endpoints"},
		{"duplicate in full set", strings.Replace(good, `"count":1`, `"count":2,"endpoints":[{"id":"a","addresses":["1"]},{"id":"a","addresses":["2"]}]`, 1), `duplicate endpoint ID "a"`},
		{"additions from nothing", strings.Replace(good, `"seq":2,"baseSeq":1`, `"seq":2`, 1) + "", ""},
		{"removal from nothing", strings.Replace(strings.Replace(good, `"seq":2,"baseSeq":1`, `"seq":2`, 1), `"count":1`, `"count":1,"removed":["x"]`, 1), "delta from nothing"},
		{"stale without since", strings.Replace(good, `"synced":true`, `"synced":true,"stale":{"reason":"x"}`, 1), "stale without since"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.Decode([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeWire = %v, want an ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

// FuzzDecodeWire: any input is refused with ErrInvalid or decodes into an
// update that encodes and decodes to itself; nothing panics, and a Replica
// either applies it or says why not.
func FuzzDecodeWire(f *testing.F) {
	f.Add([]byte(`{"schema":"disco.update.v1","target":{"name":"greeter"},"epoch":"e","seq":2,"baseSeq":1,"synced":true,"count":1,"added":[{"id":"a","addresses":["10.0.0.1"]}]}`))
	f.Add([]byte(`{"schema":"disco.update.v1","target":{"name":"g"},"epoch":"e","seq":1,"synced":true,"count":0,"endpoints":[]}`))
	f.Add([]byte(`{"schema":"disco.update.v1","target":{"name":"g"},"epoch":"e","seq":3,"synced":false,"stale":{"since":"2026-01-01T00:00:00Z","reason":"x","kind":"not_found"},"count":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := wire.Decode(data)
		if err != nil {
			if !errors.Is(err, core.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		back, err := wire.Decode(b)
		if err != nil {
			t.Fatalf("re-encoded update refused: %v\n%s", err, b)
		}
		if b2, _ := json.Marshal(back); !bytes.Equal(b, b2) {
			t.Fatalf("not stable:\n%s\n%s", b, b2)
		}
		if _, err := next(wire.NewReplica(), w); err != nil && !errors.Is(err, core.ErrResync) && !errors.Is(err, core.ErrInvalid) {
			t.Fatalf("Replica.Apply = %v", err)
		}
	})
}

// FuzzWireRoundTrip: random state sequences go through a real hub to a sink
// that sends every update over JSON in the delta form (or the full form, by
// the mask) to a Replica, which must hold the hub's state after each one.
func FuzzWireRoundTrip(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 3, 0, 2, 1, 4, 2, 3, 0}, uint8(0))
	f.Add([]byte{0, 1, 3, 0, 2, 1, 3, 0, 0, 1, 3, 0, 1, 5, 3, 1}, uint8(0b101))
	f.Fuzz(func(t *testing.T, data []byte, fullMask uint8) {
		synctest.Test(t, func(t *testing.T) {
			r := wire.NewReplica()
			calls := 0
			var failed error
			sink := core.SinkFunc(func(ctx context.Context, u core.Update) error {
				calls++
				form := wire.DeltaForm
				if fullMask>>(calls%8)&1 == 1 {
					form = wire.FullForm
				}
				b, err := json.Marshal(wire.From(u, form))
				if err != nil {
					return err
				}
				w, err := wire.Decode(b)
				if err == nil {
					var got core.Update
					if got, err = next(r, w); err == nil && !got.State.Endpoints.Equal(u.State.Endpoints) {
						err = fmt.Errorf("replica state differs at seq %d", u.Seq)
					}
				}
				if err != nil && failed == nil {
					failed = err
				}
				return err
			})
			seq := coretest.States(t, data)
			src := coretest.NewScript()
			h := coretest.Hub(t, src)
			defer h.Close()
			rec := coretest.NewRecorder()
			sub, err := h.Subscribe("wire", core.SinkFunc(func(ctx context.Context, u core.Update) error {
				if err := sink(ctx, u); err != nil {
					return core.Permanent(err)
				}
				return rec.Accept(ctx, u)
			}), svc)
			if err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			for _, s := range seq {
				src.Publish(svc, s)
				synctest.Wait()
			}
			sub.Close()
			if failed != nil {
				t.Fatal(failed)
			}
			last, _ := rec.Last(svc)
			if !last.State.Endpoints.Equal(seq[len(seq)-1]) {
				t.Fatal("the sink did not end with the last state")
			}
		})
	})
}

// Receive: the sink gets the update and the replica records it; a sink's
// error is a *SinkError and records nothing; a sink that lost its state
// makes the replica forget the target; a repeat is ErrDuplicate, a delta
// from a state not held ErrResync, neither reaching the sink.
func TestReplicaReceive(t *testing.T) {
	s1 := coretest.Set(t, ep("a", "1"))
	s2 := coretest.Set(t, ep("a", "1"), ep("b", "2"))
	full := core.Update{Target: svc, Epoch: "e", Seq: 1, State: core.State{Endpoints: s1, Synced: true}, Delta: core.Diff(core.Set{}, s1)}
	delta := core.Update{Target: svc, Epoch: "e", Seq: 2, BaseSeq: 1, State: core.State{Endpoints: s2, Synced: true}, Delta: core.Diff(s1, s2)}
	r := wire.NewReplica()
	rec := coretest.NewRecorder()
	if err := r.Receive(context.Background(), wire.From(full, wire.FullForm), rec); err != nil {
		t.Fatal(err)
	}
	if _, _, seq, ok := r.State(svc); !ok || seq != 1 || len(rec.Updates()) != 1 {
		t.Fatalf("after delivery: held seq %d (%v), %d updates", seq, ok, len(rec.Updates()))
	}
	if err := r.Receive(context.Background(), wire.From(full, wire.FullForm), rec); !errors.Is(err, wire.ErrDuplicate) || rec.Calls() != 1 {
		t.Fatalf("repeat: %v, %d calls", err, rec.Calls())
	}
	boom := errors.New("boom")
	rec.FailWith(boom)
	var se *wire.SinkError
	if err := r.Receive(context.Background(), wire.From(delta, wire.DeltaForm), rec); !errors.As(err, &se) || !errors.Is(err, boom) {
		t.Fatalf("failing sink: %v", err)
	}
	if _, _, seq, _ := r.State(svc); seq != 1 {
		t.Fatalf("a refused update was recorded: held seq %d", seq)
	}
	rec.FailWith(fmt.Errorf("lost it: %w", core.ErrResync))
	if err := r.Receive(context.Background(), wire.From(delta, wire.DeltaForm), rec); !errors.As(err, &se) || !errors.Is(err, core.ErrResync) {
		t.Fatalf("sink that lost its state: %v", err)
	}
	if _, _, _, ok := r.State(svc); ok {
		t.Fatal("the replica still holds the target after the sink lost its state")
	}
	rec.FailWith(nil)
	calls := rec.Calls()
	if err := r.Receive(context.Background(), wire.From(delta, wire.DeltaForm), rec); !errors.Is(err, core.ErrResync) || errors.As(err, &se) || rec.Calls() != calls {
		t.Fatalf("delta from a state not held: %v (sink called %d times more)", err, rec.Calls()-calls)
	}
}

// next is Replica.Next followed by Commit.
func next(r *wire.Replica, w wire.Message) (core.Update, error) {
	u, err := r.Next(w)
	if err == nil {
		r.Commit(u)
	}
	return u, err
}

func ids(s core.Set) []string {
	var out []string
	for e := range s.All() {
		out = append(out, e.ID)
	}
	return out
}

var svc = core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}

func ep(id string, addrs ...string) *core.Endpoint {
	return &core.Endpoint{ID: id, Addresses: addrs, Port: 8080}
}
