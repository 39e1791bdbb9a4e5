package connpool

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/disco-lb/disco/core"
)

// Channel is a grpc.ClientConnInterface over a pool of *grpc.ClientConn:
// generated clients take it directly (pb.NewGreeterClient(ch)). Each RPC
// goes to the pool's pick; a stream stays on the connection it started on
// and releases it when it finishes.
type Channel struct {
	pool *Pool[*grpc.ClientConn]
}

var _ grpc.ClientConnInterface = (*Channel)(nil)

// NewChannel returns a channel over pool.
func NewChannel(pool *Pool[*grpc.ClientConn]) *Channel { return &Channel{pool: pool} }

// Invoke implements grpc.ClientConnInterface.
func (c *Channel) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	h, err := c.pool.Pick(ctx)
	if err != nil {
		return err
	}
	defer h.Done()
	return h.Conn.Invoke(ctx, method, args, reply, opts...)
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
