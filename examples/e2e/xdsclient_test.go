package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds:/// scheme and the xDS balancers
)

// goXDSClientEnv, set to a target, makes this test binary the Go client of
// the xDS tests instead: a grpc-go program dialing xds:///<target> with the
// bootstrap in GRPC_XDS_BOOTSTRAP and nothing of disco, driven by the same
// line protocol as examples/xds/python/client.py.
const goXDSClientEnv = "DISCO_E2E_XDS_GO_CLIENT"

// goXDSClient is the Go client's main.
func goXDSClient(target string) int {
	c := &goClient{target: target}
	if err := c.dial(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]bool{"started": true})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd := strings.Fields(in.Text())
		if len(cmd) == 0 {
			continue
		}
		var reply any
		switch cmd[0] {
		case "load":
			n, _ := strconv.Atoi(cmd[1])
			c.load(n)
			reply = map[string]int{"load": n}
		case "report":
			reply = c.report()
		case "once":
			reply = c.once()
		case "redial":
			if err := c.dial(); err != nil {
				reply = map[string]string{"error": err.Error()}
			} else {
				reply = map[string]bool{"redialed": true}
			}
		case "keep":
			reply = c.keep(cmd[1])
		case "quit":
			c.load(0)
			return 0
		default:
			reply = map[string]string{"error": "unknown command " + cmd[0]}
		}
		_ = out.Encode(reply)
	}
	c.load(0)
	return 0
}

type goClient struct {
	target string

	mu      sync.Mutex
	cc      *grpc.ClientConn
	kept    []*grpc.ClientConn
	stop    chan struct{}
	callers sync.WaitGroup
	ok      int
	failed  int
	per     map[string]int
	errs    []string
}

func (c *goClient) dial() error {
	cc, err := grpc.NewClient(c.target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := c.cc
	c.cc = cc
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (c *goClient) call(timeout time.Duration) (string, error) {
	c.mu.Lock()
	cc := c.cc
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if err != nil {
		s := status.Convert(err)
		return "", fmt.Errorf("%s: %s", strings.ToUpper(snake(s.Code().String())), s.Message())
	}
	return r.ServerId, nil
}

// snake turns a code's Go name (DeadlineExceeded) into its canonical one's
// shape (DEADLINE_EXCEEDED, once upper-cased), as the other clients say it.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (c *goClient) load(n int) {
	c.mu.Lock()
	if c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
	c.mu.Unlock()
	c.callers.Wait()
	if n == 0 {
		return
	}
	stop := make(chan struct{})
	c.mu.Lock()
	c.stop = stop
	c.mu.Unlock()
	for range n {
		c.callers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				name, err := c.call(5 * time.Second)
				c.mu.Lock()
				if err != nil {
					c.failed++
					if len(c.errs) < 10 {
						c.errs = append(c.errs, err.Error())
					}
				} else {
					c.ok++
					if c.per == nil {
						c.per = map[string]int{}
					}
					c.per[name]++
				}
				c.mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
}

func (c *goClient) report() clientReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := clientReport{OK: c.ok, Failed: c.failed, Per: c.per, Errors: c.errs}
	c.ok, c.failed, c.per, c.errs = 0, 0, nil, nil
	return r
}

func (c *goClient) once() onceResult {
	begin := time.Now()
	name, err := c.call(30 * time.Second)
	r := onceResult{OK: err == nil, Server: name, MS: int(time.Since(begin).Milliseconds())}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// keep dials target on a channel of its own, kept open, and makes one call
// on it so that it subscribes.
func (c *goClient) keep(target string) map[string]any {
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	c.mu.Lock()
	c.kept = append(c.kept, cc)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{})
	r := map[string]any{"kept": true}
	if err != nil {
		r["error"] = err.Error()
	}
	return r
}
