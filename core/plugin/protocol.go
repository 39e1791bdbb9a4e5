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

// ProtocolVersion is the version of the protocol (proto/disco/plugin/v2)
// this package speaks, negotiated by go-plugin: a host and a plugin of
// different versions fail at start with an error naming both. Version 1
// (disco v0.2) carried errors as gRPC status codes; version 2 carries them
// as data.
const ProtocolVersion = 2

// The handshake cookie: a disco host sets the environment variable
// CookieKey to CookieValue for its plugins; a plugin binary started
// without it says it is a plugin and exits, and a plugin that does not
// know the host's value refuses to run.
const (
	CookieKey   = "DISCO_PLUGIN"
	CookieValue = "disco-plugin-v1-6f1d2c8e"
)

// handshake is go-plugin's handshake configuration (a variable so that a
// test can make a host with another cookie).
var handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   CookieKey,
	MagicCookieValue: CookieValue,
}

type sourcePlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv pb.SourceServiceServer // plugin side only
}

func (p *sourcePlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSourceServiceServer(s, p.srv)
	return nil
}

func (p *sourcePlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewSourceServiceClient(c), nil
}

type sinkPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv pb.SinkServiceServer
}

func (p *sinkPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServiceServer(s, p.srv)
	return nil
}

func (p *sinkPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewSinkServiceClient(c), nil
}
