package plugin

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
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
	serve(map[int]goplugin.PluginSet{ProtocolVersion: {SinkPlugin: &sinkPlugin{srv: &sinkServer{sink: sink, replica: core.NewReplica()}}}})
}

func serve(sets map[int]goplugin.PluginSet) {
	go exitWithHost()
	goplugin.Serve(&goplugin.ServeConfig{HandshakeConfig: handshake, VersionedPlugins: sets, GRPCServer: goplugin.DefaultGRPCServer})
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
	pb.UnimplementedSourceServer
	src core.Source
}

func (s *sourceServer) Watch(req *pb.WatchRequest, stream pb.Source_WatchServer) error {
	t := targetFromPB(req.Target)
	if err := t.Validate(); err != nil {
		return toStatus(err)
	}
	pub := &streamPublisher{stream: stream}
	return toStatus(s.src.Watch(stream.Context(), t, pub))
}

// streamPublisher sends a plugin source's Publisher calls as events: the
// first full, then deltas against the last set sent.
type streamPublisher struct {
	stream pb.Source_WatchServer
	mu     sync.Mutex
	sent   bool
	last   core.Set
}

func (p *streamPublisher) send(kind pb.SourceEvent_Kind, set *core.Set, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := &pb.SourceEvent{Kind: kind}
	if err != nil {
		ev.Error, ev.ErrorKind = err.Error(), string(core.KindOf(err))
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

func (p *streamPublisher) Publish(set core.Set) { p.send(pb.SourceEvent_PUBLISH, &set, nil) }
func (p *streamPublisher) PublishStale(set core.Set, err error) {
	p.send(pb.SourceEvent_PUBLISH_STALE, &set, err)
}
func (p *streamPublisher) Fail(err error) { p.send(pb.SourceEvent_FAIL, nil, err) }

type sinkServer struct {
	pb.UnimplementedSinkServer
	sink    core.Sink
	replica *core.Replica
}

func (s *sinkServer) Update(ctx context.Context, p *pb.WireUpdate) (*pb.UpdateResponse, error) {
	w, err := wireFromPB(p)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	err = s.replica.Deliver(ctx, w, s.sink)
	var sinkErr *core.SinkError
	switch {
	case err == nil:
		return &pb.UpdateResponse{}, nil
	case errors.Is(err, core.ErrResync): // a delta it cannot apply, or the sink lost its state
		return nil, status.Error(codes.FailedPrecondition, resyncMessage+": "+err.Error())
	case errors.As(err, &sinkErr):
		return nil, toStatus(sinkErr.Err)
	case errors.Is(err, core.ErrDuplicate):
		return &pb.UpdateResponse{}, nil
	}
	return nil, status.Error(codes.InvalidArgument, err.Error())
}

const resyncMessage = "resync"

// toStatus carries a core error across: its kind as the code, and
// Aborted for an error marked permanent whatever its kind.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	switch core.KindOf(err) {
	case core.KindInvalid:
		return status.Error(codes.InvalidArgument, err.Error())
	case core.KindNotFound:
		return status.Error(codes.NotFound, err.Error())
	case core.KindForbidden:
		return status.Error(codes.PermissionDenied, err.Error())
	}
	if core.IsPermanent(err) {
		return status.Error(codes.Aborted, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// fromStatus is toStatus's inverse, on the host.
func fromStatus(name string, err error) error {
	st, _ := status.FromError(err)
	msg := "plugin " + name + ": " + st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return kindError(string(core.KindInvalid), msg)
	case codes.NotFound:
		return kindError(string(core.KindNotFound), msg)
	case codes.PermissionDenied:
		return kindError(string(core.KindForbidden), msg)
	case codes.Aborted:
		return core.Permanent(kindError(string(core.KindUnavailable), msg))
	}
	return kindError(string(core.KindUnavailable), msg)
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
