package plugin

import (
	"context"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/disco-lb/disco/core/plugin/internal/pb"
)

// The plugin names a binary serves (go-plugin's plugin set).
const (
	SourcePlugin = "disco-source"
	SinkPlugin   = "disco-sink"
)

// ProtocolVersion is the version of the protocol (proto/disco/plugin/v1)
// this package speaks, negotiated by go-plugin: a host and a plugin of
// different versions fail at start with an error saying so.
const ProtocolVersion = 1

// Handshake is go-plugin's handshake: a binary started without this
// cookie is not run by a disco host (it says so and exits).
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "DISCO_PLUGIN",
	MagicCookieValue: "disco-plugin-v1-6f1d2c8e",
}

type sourcePlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv pb.SourceServer // plugin side only
}

func (p *sourcePlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSourceServer(s, p.srv)
	return nil
}

func (p *sourcePlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewSourceClient(c), nil
}

type sinkPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv pb.SinkServer
}

func (p *sinkPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, p.srv)
	return nil
}

func (p *sinkPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewSinkClient(c), nil
}
