package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
)

// Option configures a Source. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*options]

type options struct {
	kit.Common // WithLogger
	interval   time.Duration
	settle     time.Duration
	maxSettle  time.Duration
	grace      time.Duration
	maxSize    int64
	notify     bool
	parse      parseOptions
}

// WithInterval sets how often every file is read again whatever the
// file-system events say (more than 0, at most 24h; default 10s), for file
// systems that send no events (NFS, some FUSE and overlay mounts) and
// events that were lost.
func WithInterval(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithInterval", d, 24*time.Hour), func(o *options) { o.interval = d })
}

// WithSettle sets how long a file must be quiet (its size, modification
// time and identity unchanged, by this process's clock, or no file-system
// event on it) before it is read (more than 0, at most 1m; default 10ms):
// a writer's truncate and writes, or an editor's rename and create, are
// read as one change, and a file still being written is not read as if it
// were whole.
func WithSettle(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithSettle", d, time.Minute), func(o *options) { o.settle = d })
}

// WithMaxSettle bounds how long the source waits for a file that keeps
// changing to be quiet (more than 0, at most 1h; default 1s): after that it
// reads it anyway, and publishes what it read stale ("still being
// written"), never fresh; it reads it again once the file is quiet.
func WithMaxSettle(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithMaxSettle", d, time.Hour), func(o *options) { o.maxSettle = d })
}

// WithGrace sets how long a file that was good may be missing or fail to
// parse before it counts (0 to 1h; default 250ms): until then its last good
// content stays in force and nothing is reported, so an editor's save (the
// file briefly gone) or a writer caught between truncate and write (the
// file briefly empty) changes nothing. After it, a missing file's endpoints
// are removed and a broken file's targets are marked stale.
func WithGrace(d time.Duration) Option {
	return kit.Checked(kit.NonNegative("WithGrace", d, time.Hour), func(o *options) { o.grace = d })
}

// WithMaxSize bounds the size of a file (1 KiB to 1 GiB; default 16 MiB,
// about 500,000 endpoints in the short form): a larger file is an error
// naming it and the limit, and its targets keep their last good endpoints,
// stale.
func WithMaxSize(bytes int64) Option {
	return kit.Checked(kit.Between("WithMaxSize", bytes, 1<<10, 1<<30), func(o *options) { o.maxSize = bytes })
}

// WithDefaultPort sets the port of a Prometheus file_sd target given
// without one ("my.domain"), as Prometheus' scheme default does (default
// 0: such an endpoint has no port, and a gRPC client dials its host on
// port 443).
func WithDefaultPort(port uint16) Option {
	return func(o *options) error { o.parse.defaultPort = port; return nil }
}

// WithoutNotify turns file-system events off: the source only reads every
// WithInterval. For file systems whose events are wrong or missing.
func WithoutNotify() Option { return func(o *options) error { o.notify = false; return nil } }

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*options]

// Source discovers endpoints from files. It implements core.Source; safe
// for concurrent use. Every target it watches shares one reader of the
// files, started with the first Watch and stopped with the last.
type Source struct {
	path string // the file, or the directory
	dir  bool
	opts options

	mu   sync.Mutex
	refs int
	cur  *loader
	stop func()
}

var _ core.Source = (*Source)(nil)

// New returns a source reading path: one file, or a directory whose
// *.yaml, *.yml and *.json files it reads (names starting with "." are
// skipped, as are Kubernetes ConfigMap volumes' ..data entries: the files
// are read through their symbolic links). path must exist. New starts
// nothing.
func New(path string, opts ...Option) (*Source, error) {
	o := options{Common: kit.Common{Log: zap.NewNop()}, interval: 10 * time.Second, settle: 10 * time.Millisecond,
		maxSettle: time.Second, grace: 250 * time.Millisecond, maxSize: 16 << 20, notify: true}
	if err := kit.Apply(&o, opts...); err != nil {
		return nil, fmt.Errorf("file: %w: %w", err, core.ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("file: %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	return &Source{path: abs, dir: fi.IsDir(), opts: o}, nil
}

// Path returns the file or directory the source reads.
func (s *Source) Path() string { return s.path }

// Target parses text with core.ParseTarget (core.HostSyntax): "greeter",
// "demo/greeter", "greeter:grpc", file:///greeter.
func (s *Source) Target(text string) (core.Target, error) {
	return core.ParseTarget(text, core.HostSyntax)
}

// acquire returns the running loader, starting it for the first watcher.
func (s *Source) acquire() *loader {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		ctx, cancel := context.WithCancel(context.Background())
		l := newLoader(s)
		done := make(chan struct{})
		go func() { defer close(done); l.run(ctx) }()
		s.cur, s.stop = l, func() { cancel(); <-done }
	}
	s.refs++
	return s.cur
}

func (s *Source) release() {
	s.mu.Lock()
	s.refs--
	var stop func()
	if s.refs == 0 {
		stop, s.cur, s.stop = s.stop, nil, nil
	}
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Watch implements core.Source: it publishes t's endpoints as the files
// give them, and again whenever they change, until ctx ends.
//
//   - t defined in one file: its endpoints. If that file is missing or
//     broken for longer than the grace period, its last good endpoints
//     stay, marked stale with the file, the line and what is wrong.
//   - t defined in no file: a synced, empty set, unless a file that never
//     parsed might define it (then unavailable, with that file's error) or
//     the source's one file does not exist.
//   - t defined in two files: the last good set stays, stale, naming both.
func (s *Source) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	if err := t.Validate(); err != nil {
		return err
	}
	l := s.acquire()
	defer s.release()
	var last struct {
		version uint64
		set     core.Set
		err     string
		sent    bool
	}
	for {
		ch, version := l.changed()
		if version > 0 && version != last.version {
			last.version = version
			set, err, stale := l.view(t)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if !last.sent || msg != last.err || !set.Equal(last.set) {
				switch {
				case err != nil && stale:
					pub.PublishStale(set, err)
				case err != nil:
					pub.Fail(err)
				default:
					pub.Publish(set)
				}
				last.sent, last.set, last.err = true, set, msg
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

// view is t's state in the files now: a set (nil error), a last good set
// that is stale (error, stale true), or an error with no set to vouch for.
func (l *loader) view(t core.Target) (set core.Set, err error, stale bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	type where struct {
		path        string
		def         definition
		err         error
		provisional bool
	}
	var defs []where
	var unknown []error
	for _, path := range l.order {
		f := l.files[path]
		if d, ok := f.good[t]; ok {
			defs = append(defs, where{path, d, f.reported(), f.provisional})
		} else if f.good == nil && f.err != nil {
			unknown = append(unknown, f.err)
		}
	}
	if l.listRep { // the directory cannot be read: nothing can be vouched for
		if len(defs) == 1 {
			return defs[0].def.set, fmt.Errorf("file: target %s: keeping the last good endpoints: %w", t, l.listErr), true
		}
		return core.Set{}, fmt.Errorf("file: target %s: %w", t, l.listErr), false
	}
	switch {
	case len(defs) > 1:
		var at []string
		for _, d := range defs {
			at = append(at, fmt.Sprintf("%s:%d", d.path, d.def.line))
		}
		return core.Set{}, fmt.Errorf("file: target %s is defined in more than one file (%s): %w", t, strings.Join(at, ", "), core.ErrInvalid), false
	case len(defs) == 1:
		if defs[0].err != nil {
			return defs[0].def.set, fmt.Errorf("file: target %s: keeping the last good endpoints: %w", t, defs[0].err), true
		}
		if defs[0].provisional {
			return defs[0].def.set, fmt.Errorf("file: target %s: %s was read while still being written (changing for longer than %v); reading it again once it is quiet: %w",
				t, defs[0].path, l.s.opts.maxSettle, core.ErrUnavailable), true
		}
		return defs[0].def.set, nil, false
	case len(unknown) > 0:
		return core.Set{}, fmt.Errorf("file: target %s: %w", t, errors.Join(unknown...)), false
	case !l.s.dir && l.missing:
		return core.Set{}, fmt.Errorf("file: %s does not exist: %w", l.s.path, core.ErrUnavailable), false
	}
	return core.Set{}, nil, false
}
