package grpcresolver

import (
	"context"
	"encoding/json"
	"google.golang.org/grpc/balancer/randomsubsetting"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core/kit"
)

// The recommended client setup, measured against pods that die, reset,
// vanish and lose their link (see the README, "When a pod dies"): a
// least-request balancer, so that a pod whose calls stop completing stops
// getting new ones; keepalive, so that a connection to a vanished pod is
// dropped within seconds (grpc-go then also sets TCP_USER_TIMEOUT to the
// keepalive timeout, failing calls in flight); and a retry of unary calls
// that fail with UNAVAILABLE, so that those calls, and calls that meet a
// reset, go to another pod. Retries repeat calls that may have reached a
// server that died before answering: use them for idempotent methods.

// Keepalive is the recommended client keepalive: a ping after 10 s without
// activity, the connection dropped after 2 s without an answer. Servers
// must allow it: keepalive.EnforcementPolicy{MinTime: 10 * time.Second,
// PermitWithoutStream: true} (the default policy answers pings more often
// than every 5 minutes with GOAWAY).
var Keepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}

// Retry says how a unary call that failed with UNAVAILABLE is tried again.
type Retry struct {
	// Attempts is the most attempts a call gets, the first included.
	Attempts int
	// Backoff spaces the attempts (jittered; Min for the first retry).
	Backoff kit.Backoff
}

// RecommendedRetry is up to 4 attempts, 50 ms to 1 s apart.
var RecommendedRetry = Retry{Attempts: 4, Backoff: kit.Backoff{Min: 50 * time.Millisecond, Max: time.Second}}

// UnaryRetry returns a client interceptor that retries unary calls that
// fail with UNAVAILABLE, by r, within the call's deadline; each attempt is
// picked anew by the balancer (least request sends it elsewhere). Unlike a
// service-config retry policy it also retries a call whose connection broke
// after the response began: for a unary call the application has seen
// nothing yet, so this is as safe as any retry of an idempotent method.
// Streams are not retried (grpc-go still retries transparently those that
// never reached a server).
func UnaryRetry(r Retry) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := 0; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil || attempt+1 >= r.Attempts || status.Code(err) != codes.Unavailable {
				return err
			}
			if !kit.Sleep(ctx, r.Backoff.Delay(attempt)) {
				return err
			}
		}
	}
}

// LeastRequest is the load-balancing config of disco's least-request
// policy (power of two choices on calls in flight; see LeastRequestName).
var LeastRequest = map[string]any{LeastRequestName: map[string]any{}}

// RandomSubsetting returns the load-balancing config of grpc-go's random
// subsetting (gRFC A68; experimental in grpc-go, registered by this
// package): each ClientConn connects to k of the target's endpoints,
// chosen by a rendezvous hash with a random seed of its own, and balances
// over them with child (LeastRequest, say, or {"round_robin":{}}). An
// endpoint that goes is replaced by one other. Clients that cannot see
// each other spread only about evenly over the backends (see
// BENCHMARKS.md); connpool.WithSubset is the pool's equivalent, and the
// xDS server's subsets (sinks/xds WithSubsetSize) are even. Pass it to
// ServiceConfig:
//
//	grpc.WithDefaultServiceConfig(grpcresolver.ServiceConfig(
//		grpcresolver.RandomSubsetting(20, grpcresolver.LeastRequest)))
func RandomSubsetting(k int, child map[string]any) map[string]any {
	RegisterLeastRequest()
	return map[string]any{randomsubsetting.Name: map[string]any{"subsetSize": k, "childPolicy": []any{child}}}
}

// ServiceConfig returns a service config JSON that selects the
// load-balancing config lb (LeastRequest, say, or
// {"round_robin":{}}).
func ServiceConfig(lb map[string]any) string {
	b, _ := json.Marshal(map[string]any{"loadBalancingConfig": []any{lb}})
	return string(b)
}

// DialOptions returns the recommended client setup for targets of this
// builder: the builder as the resolver, Keepalive, UnaryRetry with
// RecommendedRetry, and a default service config with the least-request
// policy (registered on the first call: call DialOptions at start-up,
// before creating clients, as any balancer registration). Add credentials:
//
//	cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc",
//		append(b.DialOptions(), grpc.WithTransportCredentials(creds))...)
//
// A service config the builder sends (WithServiceConfig, for example
// ZoneAwareServiceConfig, whose policy also picks by least request among
// the zone's endpoints) replaces the default one.
func (b *Builder) DialOptions() []grpc.DialOption {
	RegisterLeastRequest()
	return []grpc.DialOption{
		grpc.WithResolvers(b),
		grpc.WithKeepaliveParams(Keepalive),
		grpc.WithChainUnaryInterceptor(UnaryRetry(RecommendedRetry)),
		grpc.WithDefaultServiceConfig(ServiceConfig(LeastRequest)),
	}
}
