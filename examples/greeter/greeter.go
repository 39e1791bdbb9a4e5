// Package greeter is the demo's gRPC service: SayHello answers with the name
// of the pod that served it. It uses protobuf's well-known StringValue for
// request and reply, so it needs no generated code.
package greeter

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the gRPC service's full name.
const ServiceName = "disco.examples.Greeter"

const sayHello = "/" + ServiceName + "/SayHello"

// Server answers every SayHello with its pod name.
type Server struct{ Pod string }

// SayHello returns the name of the pod that served the call.
func (s *Server) SayHello(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(s.Pod), nil
}

// Register adds the service to a gRPC server.
func Register(gs *grpc.Server, s *Server) {
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "SayHello", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*Server).SayHello(ctx, in)
		}}},
	}, s)
}

// Client calls the greeter over any connection: a *grpc.ClientConn or a
// connpool.Channel.
type Client struct{ cc grpc.ClientConnInterface }

// NewClient returns a client over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// SayHello calls the service and returns the name of the pod that answered.
func (c *Client) SayHello(ctx context.Context, name string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, sayHello, wrapperspb.String(name), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// ClientKeepalive is the client side of the keepalive the README
// recommends: a connection to a pod whose node vanished (no reset, just
// silence) is dropped after 2 s of unacknowledged data (grpc-go sets
// TCP_USER_TIMEOUT) or a ping unanswered for 2 s after 10 s of silence,
// instead of holding calls until their deadlines.
func ClientKeepalive() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true})
}

// ServerKeepalive lets clients ping as often as ClientKeepalive does; the
// default policy answers pings more often than every 5 minutes with GOAWAY.
func ServerKeepalive() grpc.ServerOption {
	return grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true})
}
