package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
)

// fileState is what the loader knows of one file.
type fileState struct {
	data []byte                     // the contents last parsed (good or not)
	good map[core.Target]definition // the last good parse; nil: never parsed
	err  error                      // why the current contents are unusable; nil: good
	bad  time.Time                  // since when err holds
	rep  bool                       // err is reported: past grace, or the file never parsed
	gone time.Time                  // since when the file is missing; zero: it is there
}

// reported is the error the file's targets carry, nil while within grace.
func (f *fileState) reported() error {
	if f.rep {
		return f.err
	}
	return nil
}

// loader reads the files, on file-system events (debounced), every
// interval, and when a grace period ends, and tells watchers when anything
// changed.
type loader struct {
	s   *Source
	log *zap.Logger

	mu      sync.Mutex
	files   map[string]*fileState
	order   []string // paths, sorted
	missing bool     // the source's one file does not exist
	version uint64   // 0 until the first read; +1 on every change
	ch      chan struct{}
}

func newLoader(s *Source) *loader {
	return &loader{s: s, log: s.opts.log.With(zap.String("path", s.path)), files: map[string]*fileState{}, ch: make(chan struct{})}
}

// changed returns a channel closed at the next change, and the version now.
func (l *loader) changed() (<-chan struct{}, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ch, l.version
}

func (l *loader) run(ctx context.Context) {
	o := l.s.opts
	var events <-chan fsnotify.Event
	var errs <-chan error
	if o.notify {
		w, err := fsnotify.NewWatcher()
		if err == nil {
			dir := l.s.path
			if !l.s.dir {
				dir = filepath.Dir(l.s.path)
			}
			if err = w.Add(dir); err == nil {
				events, errs = w.Events, w.Errors
				defer w.Close()
			} else {
				w.Close()
			}
		}
		if err != nil {
			l.log.Warn("file: no file-system events; reading every interval only", zap.Duration("interval", o.interval), zap.Error(err))
		}
	}
	next := l.read()
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	var burst time.Time // first event of the burst not yet read
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	arm := func(at time.Time) {
		due.Stop()
		if !at.IsZero() {
			due.Reset(time.Until(at))
		}
	}
	arm(next)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !l.relevant(ev.Name) {
				continue
			}
			now := time.Now()
			if burst.IsZero() {
				burst = now
			}
			// Wait for the burst to end, but not forever.
			wait := min(o.settle, burst.Add(5*o.settle).Sub(now))
			settle.Reset(max(wait, 0))
			continue
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			l.log.Warn("file: file-system events lost; reading again", zap.Error(err))
		case <-settle.C:
		case <-tick.C:
		case <-due.C:
		}
		burst = time.Time{}
		arm(l.read())
	}
}

// relevant reports whether an event on name may change what is read: in
// a directory, any entry (a ConfigMap's ..data swap renames a link the
// files point through); for one file, that file and its directory's
// ConfigMap entries.
func (l *loader) relevant(name string) bool {
	if l.s.dir {
		return true
	}
	base := filepath.Base(name)
	return name == l.s.path || strings.HasPrefix(base, "..")
}

// candidates lists the files to read.
func (l *loader) candidates() ([]string, error) {
	if !l.s.dir {
		return []string{l.s.path}, nil
	}
	entries, err := os.ReadDir(l.s.path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
			out = append(out, filepath.Join(l.s.path, name))
		}
	}
	return out, nil
}

// read reads every file, updates what changed, wakes the watchers if
// anything did, and returns when it must read again to end a grace period
// (zero: no need).
func (l *loader) read() time.Time {
	now := time.Now()
	grace := l.s.opts.grace
	paths, err := l.candidates()
	if err != nil {
		l.log.Warn("file: cannot list the directory; keeping what was read", zap.Error(err))
		return now.Add(l.s.opts.settle * 10)
	}
	type result struct {
		data    []byte
		missing bool
		err     error
	}
	results := make(map[string]result, len(paths))
	for _, p := range paths {
		data, err := readWhole(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			results[p] = result{missing: true}
		case errors.Is(err, errChanging):
			// Being written: the event that ends the write reads it.
			results[p] = result{data: nil, err: err}
		case err != nil:
			results[p] = result{err: fmt.Errorf("file: %s: %v: %w", p, err, core.ErrUnavailable)}
		default:
			results[p] = result{data: data}
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	changed := l.version == 0
	var next time.Time
	soonest := func(at time.Time) { // read again at at, or earlier
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	// Files no longer listed are missing.
	for p := range l.files {
		if _, ok := results[p]; !ok {
			results[p] = result{missing: true}
		}
	}
	missingOne := false
	for p, r := range results {
		if errors.Is(r.err, errChanging) {
			soonest(now.Add(l.s.opts.settle))
			continue
		}
		f := l.files[p]
		if r.missing {
			if !l.s.dir {
				missingOne = true
			}
			if f == nil {
				continue
			}
			if f.good == nil { // never good: nothing to keep
				delete(l.files, p)
				changed = true
				continue
			}
			if f.gone.IsZero() {
				f.gone, f.data = now, nil
			}
			if now.Sub(f.gone) >= grace {
				delete(l.files, p)
				changed = true
				l.log.Info("file: removed; its endpoints with it", zap.String("file", p))
			} else {
				soonest(f.gone.Add(grace))
			}
			continue
		}
		if f == nil {
			f = &fileState{}
			l.files[p] = f
		}
		f.gone = time.Time{}
		if r.err != nil || f.data == nil || !bytes.Equal(r.data, f.data) {
			var defs map[core.Target]definition
			perr := r.err
			if perr == nil {
				defs, perr = parse(p, r.data)
			}
			f.data = r.data
			if perr == nil {
				f.good, f.err, f.rep, f.bad = defs, nil, false, time.Time{}
				changed = true
				continue
			}
			if f.err == nil {
				f.bad = now
			}
			f.err = perr
			changed = changed || f.rep // a reported error's reason may have changed
		}
		// A problem is reported at once for a file that was never good,
		// else once it has outlived the grace period.
		if f.err != nil && !f.rep {
			if f.good == nil || now.Sub(f.bad) >= grace {
				f.rep, changed = true, true
				l.log.Warn("file: unusable; keeping its last good endpoints", zap.Error(f.err))
			} else {
				soonest(f.bad.Add(grace))
			}
		}
	}
	if missingOne != l.missing {
		l.missing, changed = missingOne, true
	}
	if changed {
		l.order = l.order[:0]
		for p := range l.files {
			l.order = append(l.order, p)
		}
		slices.Sort(l.order)
		l.version++
		close(l.ch)
		l.ch = make(chan struct{})
	}
	return next
}

// errChanging means a file changed while it was read.
var errChanging = errors.New("changed while read")

// readWhole reads a file, following links, and makes sure it did not
// change meanwhile: same size and modification time before and after, and
// as many bytes as the size.
func readWhole(path string) ([]byte, error) {
	before, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if before.IsDir() {
		return nil, errors.New("is a directory")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	after, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !os.SameFile(before, after) || before.Size() != after.Size() || !before.ModTime().Equal(after.ModTime()) || int64(len(data)) != after.Size() {
		return nil, errChanging
	}
	return data, nil
}
