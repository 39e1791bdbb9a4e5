package connpool

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
)

// Channel is a grpc.ClientConnInterface over a pool of *grpc.ClientConn:
// generated clients take it directly (pb.NewGreeterClient(ch)). Each RPC
// goes to the pool's pick; a stream stays on the connection it started on
// and releases it when it finishes.
type Channel struct {
	pool  *Pool[*grpc.ClientConn]
	retry Retry
}

var _ grpc.ClientConnInterface = (*Channel)(nil)

// Retry is how a Channel retries a unary call that failed with UNAVAILABLE
// (the connection broke or was reset, or the server answered UNAVAILABLE).
// Each attempt goes to a pick that avoids the endpoints already tried,
// after a jittered backoff; the call's deadline bounds them all. This
// repeats calls that may have reached a server that died before answering:
// use it for idempotent methods. A unary call's application has seen
// nothing of a failed attempt, so an attempt whose response had begun is
// retried too.
type Retry struct {
	// Attempts is the most attempts a call gets, the first included (0 or
	// 1: no retry).
	Attempts int
	// Backoff spaces the attempts (Min for the first retry).
	Backoff kit.Backoff
}

// RecommendedRetry is the retry of the recommended setup: up to 4
// attempts, 50 ms to 1 s apart, as grpcresolver.RetryPolicy.
var RecommendedRetry = Retry{Attempts: 4, Backoff: kit.Backoff{Min: 50 * time.Millisecond, Max: time.Second}}

// ChannelOption configures a Channel. A value out of range makes
// NewChannel fail with an error naming the option and what it allows.
type ChannelOption = kit.Option[*Channel]

// WithRetry makes the channel retry unary calls by r (Attempts 0 to 10; a
// backoff with 0 < Min <= Max <= 24h).
func WithRetry(r Retry) ChannelOption {
	return func(c *Channel) error {
		if err := kit.Between("WithRetry", r.Attempts, 0, 10); err != nil {
			return err
		}
		if r.Attempts > 1 {
			if err := kit.CheckBackoff("WithRetry", r.Backoff.Min, r.Backoff.Max); err != nil {
				return err
			}
		}
		c.retry = r
		return nil
	}
}

// NewChannel returns a channel over pool.
func NewChannel(pool *Pool[*grpc.ClientConn], opts ...ChannelOption) (*Channel, error) {
	c := &Channel{pool: pool}
	if pool == nil {
		return nil, fmt.Errorf("connpool: NewChannel needs a pool: %w", core.ErrInvalid)
	}
	if err := kit.Apply(c, opts...); err != nil {
		return nil, fmt.Errorf("connpool: %w: %w", err, core.ErrInvalid)
	}
	return c, nil
}

// Invoke implements grpc.ClientConnInterface.
func (c *Channel) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	var tried []*core.Endpoint
	for attempt := 0; ; attempt++ {
		h, err := c.pool.pickAvoiding(ctx, tried)
		if err != nil {
			return err
		}
		err = h.Conn.Invoke(ctx, method, args, reply, opts...)
		ep := h.Endpoint()
		h.Done()
		if err == nil || attempt+1 >= c.retry.Attempts || status.Code(err) != codes.Unavailable {
			return err
		}
		tried = append(tried, ep)
		if !kit.Sleep(ctx, c.retry.Backoff.Delay(attempt)) {
			return err
		}
	}
}

// NewStream implements grpc.ClientConnInterface.
func (c *Channel) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	h, err := c.pool.Pick(ctx)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	done := func() { once.Do(h.Done) }
	// A new slice: appending to opts could write into the caller's array.
	all := make([]grpc.CallOption, 0, len(opts)+1)
	all = append(append(all, opts...), grpc.OnFinish(func(error) { done() }))
	s, err := h.Conn.NewStream(ctx, desc, method, all...)
	if err != nil {
		done()
		return nil, err
	}
	return s, nil
}

// Keepalive is the recommended keepalive for the pool's connections (as
// grpcresolver.Keepalive): a ping after 10 s without activity, the
// connection dropped after 2 s without an answer, so that a vanished
// backend's calls fail (and are retried elsewhere) within seconds. Servers
// must allow it (keepalive.EnforcementPolicy{MinTime: 10 * time.Second,
// PermitWithoutStream: true}).
var Keepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}

// RecommendedDialOptions returns the dial options of the recommended setup
// for DialGRPC (add credentials): Keepalive. Pair it with a Channel made
// with WithRetry(RecommendedRetry) (see the README, "When a pod dies").
func RecommendedDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithKeepaliveParams(Keepalive)}
}

// DialGRPC returns a BuildFunc that makes a *grpc.ClientConn to the
// endpoint's first address (passthrough: no DNS) with opts (credentials,
// interceptors, keepalive...), starts connecting, and waits up to
// readyTimeout for it to be ready (0: do not wait), so that an endpoint that
// cannot be reached is retried rather than picked.
func DialGRPC(readyTimeout time.Duration, opts ...grpc.DialOption) BuildFunc[*grpc.ClientConn] {
	return func(ctx context.Context, ep *core.Endpoint) (*grpc.ClientConn, error) {
		cc, err := grpc.NewClient("passthrough:///"+ep.HostPort(), opts...)
		if err != nil {
			return nil, fmt.Errorf("connpool: dial %s: %w", ep.HostPort(), err)
		}
		if readyTimeout <= 0 {
			return cc, nil
		}
		cc.Connect()
		wctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(wctx, s) {
				cc.Close()
				return nil, fmt.Errorf("connpool: %s not ready after %v (last state %s)", ep.HostPort(), readyTimeout, s)
			}
		}
		return cc, nil
	}
}

// CloseGRPC closes a *grpc.ClientConn (a CloseFunc for DialGRPC). Closing
// ends calls in flight, which is why the pool calls it only once a removed
// endpoint's calls are done, or its drain timeout has passed.
func CloseGRPC(cc *grpc.ClientConn) error { return cc.Close() }

// GRPCUsable reports whether a connection can take a call now: it is ready.
// An idle one is asked to connect and counts as not usable yet. For
// WithUsable.
func GRPCUsable(cc *grpc.ClientConn) bool {
	switch cc.GetState() {
	case connectivity.Ready:
		return true
	case connectivity.Idle:
		cc.Connect()
	}
	return false
}

// Recommended returns a pool of gRPC connections and a channel over it, set
// up as measured against pods that die, reset, vanish and lose their link
// (see the README, "When a pod dies"): connections built with DialGRPC (5 s
// to be ready), Keepalive and dialOpts (add credentials); picks by least
// request among ready connections (GRPCUsable); unary calls that fail with
// UNAVAILABLE retried elsewhere (RecommendedRetry). Subscribe the pool to a
// hub; use the channel as a generated client's connection. It fails only
// for an option out of range.
func Recommended(dialOpts []grpc.DialOption, opts ...Option) (*Pool[*grpc.ClientConn], *Channel, error) {
	pool, err := New(DialGRPC(5*time.Second, append(RecommendedDialOptions(), dialOpts...)...), CloseGRPC,
		append([]Option{WithUsable(GRPCUsable)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	ch, err := NewChannel(pool, WithRetry(RecommendedRetry))
	if err != nil {
		return nil, nil, err
	}
	return pool, ch, nil
}
