package plugin

import (
	"context"
	"errors"
	"math"
	"os"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
	"github.com/disco-lb/disco/core/wire"
)

// ServeSource serves src to a disco host over go-plugin: call it from a
// plugin binary's main. It returns when the host ends the plugin.
func ServeSource(src core.Source) {
	serve(map[int]goplugin.PluginSet{ProtocolVersion: {SourcePlugin: &sourcePlugin{srv: &sourceServer{src: src}}}})
}

// ServeSink serves sink to a disco host over go-plugin: call it from a
// plugin binary's main. The sink gets the Updates an in-process sink would
// (complete state, delta against what it accepted); it may return an
// error wrapping core.ErrResync to get the full state.
func ServeSink(sink core.Sink) {
	serve(map[int]goplugin.PluginSet{ProtocolVersion: {SinkPlugin: &sinkPlugin{srv: &sinkServer{sink: sink, replica: wire.NewReplica()}}}})
}

func serve(sets map[int]goplugin.PluginSet) {
	go exitWithHost()
	goplugin.Serve(&goplugin.ServeConfig{HandshakeConfig: handshake, VersionedPlugins: sets, GRPCServer: grpcServer})
}

// grpcServer is go-plugin's gRPC server with grpc-go's 4 MiB receive limit
// raised to protobuf's own: any update the host can send arrives.
func grpcServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(math.MaxInt32), grpc.MaxSendMsgSize(math.MaxInt32))...)
}

// Logger returns a zap logger for a plugin binary: JSON lines on stderr in
// hclog's form, which the host reads and logs through its own zap logger at
// the same level, named after the plugin.
func Logger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		MessageKey: "@message", LevelKey: "@level", TimeKey: "@timestamp", NameKey: "@module",
		EncodeLevel: zapcore.LowercaseLevelEncoder, EncodeTime: zapcore.TimeEncoderOfLayout("2006-01-02T15:04:05.000000Z07:00"), // hclog's
		EncodeDuration: zapcore.StringDurationEncoder,
	})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(stderr), zapcore.DebugLevel))
}

// stderr is the process's stderr before go-plugin's Serve redirects
// os.Stderr into its stdio stream: the host parses log lines from it.
var stderr = os.Stderr

type sourceServer struct {
	pb.UnimplementedSourceServiceServer
	src core.Source
}

// Watch runs the source's Watch for the stream's target and ends the stream
// with an END event carrying Watch's error as data. A gRPC status other than
// OK is left to the transport: the host reads only that as a broken plugin.
func (s *sourceServer) Watch(req *pb.WatchRequest, stream pb.SourceService_WatchServer) error {
	pub := &streamPublisher{stream: stream}
	t := targetFromPB(req.Target)
	err := t.Validate()
	if err == nil {
		err = s.src.Watch(stream.Context(), t, pub)
	}
	pub.end(err)
	return nil
}

// streamPublisher sends a plugin source's Publisher calls as events: the
// first set full, then deltas against the last set sent. After the watch
// ended it ignores everything (core's Publisher rule).
type streamPublisher struct {
	stream pb.SourceService_WatchServer
	mu     sync.Mutex
	ended  bool
	sent   bool
	last   core.Set
}

func (p *streamPublisher) send(kind pb.EventKind, set *core.Set, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	ev := &pb.WatchResponse{Kind: kind, Error: errorToPB(err)}
	if kind == pb.EventKind_EVENT_KIND_END {
		p.ended = true
	}
	if set != nil {
		if !p.sent {
			ev.Full = true
			ev.Upserts = endpointsToPB(set.Slice())
		} else {
			d := core.Diff(p.last, *set)
			ev.Upserts = endpointsToPB(d.Added)
			for _, c := range d.Changed {
				ev.Upserts = append(ev.Upserts, endpointToPB(c.New))
			}
			for _, e := range d.Removed {
				ev.Removed = append(ev.Removed, e.ID)
			}
		}
		ev.Count = uint32(set.Len())
		p.sent, p.last = true, *set
	} else if p.sent {
		ev.Count = uint32(p.last.Len())
	}
	_ = p.stream.Send(ev) // a host that left cancels the watch's context
}

func (p *streamPublisher) Publish(set core.Set) { p.send(pb.EventKind_EVENT_KIND_PUBLISH, &set, nil) }
func (p *streamPublisher) PublishStale(set core.Set, err error) {
	if err == nil {
		p.Publish(set)
		return
	}
	p.send(pb.EventKind_EVENT_KIND_PUBLISH_STALE, &set, err)
}
func (p *streamPublisher) Fail(err error) {
	if err != nil {
		p.send(pb.EventKind_EVENT_KIND_FAIL, nil, err)
	}
}
func (p *streamPublisher) end(err error) { p.send(pb.EventKind_EVENT_KIND_END, nil, err) }

type sinkServer struct {
	pb.UnimplementedSinkServiceServer
	sink    core.Sink
	replica *wire.Replica
}

// Update hands the sink the update the request makes of what the plugin
// holds; every answer, the sink's errors included, is data in the
// response.
func (s *sinkServer) Update(ctx context.Context, p *pb.UpdateRequest) (*pb.UpdateResponse, error) {
	w, err := wireFromPB(p)
	if err != nil {
		return &pb.UpdateResponse{Error: errorToPB(core.Permanent(err))}, nil
	}
	err = s.replica.Receive(ctx, w, s.sink)
	var sinkErr *wire.SinkError
	switch {
	case err == nil, errors.Is(err, wire.ErrDuplicate): // a duplicate: already applied
		return &pb.UpdateResponse{}, nil
	case errors.As(err, &sinkErr):
		return &pb.UpdateResponse{Error: errorToPB(sinkErr.Err)}, nil
	case errors.Is(err, core.ErrResync): // a delta that does not fit what the plugin holds
		return &pb.UpdateResponse{Error: errorToPB(core.Retry(err, 0))}, nil
	}
	return &pb.UpdateResponse{Error: errorToPB(core.Permanent(err))}, nil
}

// exitWithHost ends the plugin when its host is gone, even when the host
// was killed and could not end it: the parent process changes (the
// orphan is adopted by init or a subreaper).
func exitWithHost() {
	parent := os.Getppid()
	for range time.Tick(200 * time.Millisecond) {
		if os.Getppid() != parent {
			os.Exit(2)
		}
	}
}
