// Command webhook-sender delivers every change of some targets to a
// webhook receiver (Standard Webhooks, signed with DISCO_WEBHOOK_SECRET):
// disco's webhook sink over the file source.
//
//	webhook-sender secret                  print a new whsec_ secret (for both sides)
//	DISCO_WEBHOOK_SECRET=whsec_... webhook-sender -url http://127.0.0.1:8090/ -source /etc/disco -target greeter
//	webhook-sender -example                (make webhook-example) everything, from nothing
//
// The second form runs until SIGTERM or Ctrl-C; -source is a file or a
// directory of the file source (YAML, JSON or Prometheus file_sd), -target
// may be given more than once. With -example it makes a secret, starts
// examples/cmd/webhook-receiver (built for the purpose) on loopback with
// it, writes a targets file, changes it three times, and shows what the
// receiver printed for each delivery.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/webhook"
	"github.com/disco-lb/disco/sources/file"
)

type targetList []string

func (t *targetList) String() string     { return strings.Join(*t, ",") }
func (t *targetList) Set(v string) error { *t = append(*t, v); return nil }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "secret" {
		s, err := webhook.NewSecret()
		if err != nil {
			fail(err)
		}
		fmt.Println(s.Text())
		return
	}
	url := flag.String("url", "", "the receiver's URL")
	source := flag.String("source", "", "file or directory of the file source")
	var targets targetList
	flag.Var(&targets, "target", "a target of the source to deliver (repeat for more)")
	example := flag.Bool("example", false, "run a receiver and this sender on loopback and show deliveries")
	flag.Parse()
	cfg := zap.NewDevelopmentConfig()
	cfg.DisableStacktrace, cfg.DisableCaller = true, true
	cfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	log, _ := cfg.Build()
	defer log.Sync()
	var err error
	if *example {
		err = runExample(log)
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = send(ctx, log, *url, *source, targets, os.Getenv("DISCO_WEBHOOK_SECRET"), nil)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "webhook-sender:", err)
	os.Exit(1)
}

// send delivers the targets' changes to url until ctx ends; synced, if
// set, is closed once every target was delivered once.
func send(ctx context.Context, log *zap.Logger, url, source string, targets []string, secret string, synced chan<- struct{}) error {
	switch {
	case secret == "":
		return errors.New("set DISCO_WEBHOOK_SECRET (make one with: webhook-sender secret)")
	case url == "" || source == "" || len(targets) == 0:
		return errors.New("need -url, -source and at least one -target (or -example)")
	}
	src, err := file.New(source, file.WithLogger(log))
	if err != nil {
		return err
	}
	hub, err := core.NewHub(src, core.WithLogger(log))
	if err != nil {
		return err
	}
	defer hub.Close()
	s, err := webhook.New(url, webhook.WithSecrets(secret), webhook.WithLogger(log))
	if err != nil {
		return err
	}
	defer s.Close()
	var tgs []core.Target
	for _, text := range targets {
		t, err := src.Target(text)
		if err != nil {
			return err
		}
		tgs = append(tgs, t)
	}
	d, err := s.Deliver(hub, tgs...)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.WaitSynced(ctx); err != nil {
		return err
	}
	log.Info("delivering", zap.String("url", url), zap.Strings("targets", targets))
	if synced != nil {
		close(synced)
	}
	<-ctx.Done()
	return nil
}

// runExample: a secret, the receiver binary on loopback, this sender, and
// a targets file that changes.
func runExample(log *zap.Logger) error {
	dir, err := os.MkdirTemp("", "disco-webhook-example")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	secret, err := webhook.NewSecret()
	if err != nil {
		return err
	}
	log.Info("made a secret for both sides", zap.Stringer("secret", secret)) // redacted
	receiverBin := filepath.Join(dir, "webhook-receiver")
	if out, err := exec.Command("go", "build", "-o", receiverBin, "github.com/disco-lb/disco/examples/cmd/webhook-receiver").CombinedOutput(); err != nil {
		return fmt.Errorf("building webhook-receiver (run from the repository): %v\n%s", err, out)
	}
	recv := exec.Command(receiverBin, "-listen", "127.0.0.1:0")
	recv.Env = append(os.Environ(), "DISCO_WEBHOOK_SECRET="+secret.Text())
	recv.Stderr = os.Stderr
	out, err := recv.StdoutPipe()
	if err != nil {
		return err
	}
	if err := recv.Start(); err != nil {
		return err
	}
	defer func() { _ = recv.Process.Signal(syscall.SIGTERM); _ = recv.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	first := <-lines // "listening on http://127.0.0.1:N/"
	url := strings.TrimPrefix(first, "listening on ")
	if url == first {
		return fmt.Errorf("the receiver said %q", first)
	}
	fmt.Println("receiver:", first)

	targets := filepath.Join(dir, "targets.yaml")
	steps := []struct{ what, endpoints string }{
		{"greeter has two endpoints", "[10.0.0.1:50051, 10.0.0.2:50051]"},
		{"a third one is added", "[10.0.0.1:50051, 10.0.0.2:50051, 10.0.0.3:50051]"},
		{"the first one goes", "[10.0.0.2:50051, 10.0.0.3:50051]"},
	}
	write := func(eps string) error {
		tmp := targets + ".tmp"
		if err := os.WriteFile(tmp, []byte("targets:\n  - target: greeter\n    endpoints: "+eps+"\n"), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, targets) // atomically, as a careful writer does
	}
	if err := write(steps[0].endpoints); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	synced := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- send(ctx, log, url, dir, []string{"greeter"}, secret.Text(), synced) }()
	for i, step := range steps {
		if i > 0 {
			if err := write(step.endpoints); err != nil {
				return err
			}
		} else {
			select {
			case <-synced:
			case err := <-done:
				return err
			}
		}
		fmt.Println("sender:  ", step.what)
		select {
		case line, ok := <-lines:
			if !ok {
				return errors.New("the receiver exited")
			}
			fmt.Println("receiver:", line)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("no delivery for %q in 30 s", step.what)
		}
	}
	cancel()
	return <-done
}
