package main

import (
	"context"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/wire"
	"github.com/disco-lb/disco/sinks/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The example receiver prints what a webhook sender delivers.
func TestReceiverPrintsDeliveries(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuf
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, []string{secret}, &out) }()
	defer func() { cancel(); <-done }()

	tg := core.Target{Namespace: "demo", Name: "greeter"}
	set, _ := core.NewSet(&core.Endpoint{Addresses: []string{"10.0.0.1"}, Port: 50051})
	hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{tg: set}))
	defer hub.Close()
	s, err := webhook.New("http://"+ln.Addr().String()+"/", webhook.WithSecrets(secret), webhook.WithForm(wire.DeltaForm))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sub, err := s.Deliver(hub, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "demo/greeter seq") {
		if time.Now().After(deadline) {
			t.Fatalf("printed %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := out.String(); !strings.Contains(got, "(+1 -0 ~0, fresh): 10.0.0.1:50051") {
		t.Fatalf("printed %q", got)
	}
}
