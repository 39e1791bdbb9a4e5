// Command webhook-receiver is a receiver for disco's webhook sink: it
// verifies each delivery (Standard Webhooks), keeps every target's state,
// and prints the endpoints of a target whenever they change.
//
//	DISCO_WEBHOOK_SECRET=whsec_... webhook-receiver -listen 127.0.0.1:8090
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/webhook"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to listen on")
	flag.Parse()
	secret := os.Getenv("DISCO_WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("webhook-receiver: set DISCO_WEBHOOK_SECRET to the sender's whsec_ secret")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("listening on http://%s/\n", ln.Addr())
	if err := serve(ctx, ln, []string{secret}, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// serve runs the receiver on ln until ctx ends, printing each applied
// update to out.
func serve(ctx context.Context, ln net.Listener, secrets []string, out io.Writer) error {
	r, err := webhook.NewReceiver(func(_ context.Context, u core.Update) error {
		fmt.Fprintln(out, describe(u))
		return nil
	}, secrets)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// describe renders an update: target, seq, what changed, the endpoints.
func describe(u core.Update) string {
	var eps []string
	for e := range u.State.Endpoints.All() {
		eps = append(eps, e.HostPort())
	}
	status := "fresh"
	if u.State.Stale.IsStale() {
		status = "stale: " + u.State.Stale.Reason
	}
	return fmt.Sprintf("%s seq %d (+%d -%d ~%d, %s): %s", u.Target, u.Seq, len(u.Added), len(u.Removed), len(u.Changed), status, strings.Join(eps, " "))
}
