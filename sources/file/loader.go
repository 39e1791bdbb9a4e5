package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
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
	// provisional: good was read while the file was still changing (it
	// kept changing for longer than WithMaxSettle): published stale until
	// a read of the quiet file.
	provisional bool
}

// probe is what the run goroutine knows of a file between reads, to tell
// whether it is quiet: unchanged (size, time, identity) for the settle
// time, by this process's clock.
type probe struct {
	key   statKey
	since time.Time // when key was first seen
	busy  time.Time // since when the file keeps changing; zero: quiet
}

type statKey struct {
	size     int64
	mod      time.Time
	dev, ino uint64
}

func keyOf(fi os.FileInfo) statKey {
	k := statKey{size: fi.Size(), mod: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.dev, k.ino = uint64(st.Dev), uint64(st.Ino)
	}
	return k
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

	// Owned by the run goroutine.
	probes    map[string]*probe    // per file, to tell whether it is quiet
	events    map[string]time.Time // per path, the last file-system event on it
	allEvent  time.Time            // the last event on every file at once (a ConfigMap's ..data swap)
	trustFrom time.Time            // events before this may have been lost
	notifying bool                 // events arrive

	mu      sync.Mutex
	files   map[string]*fileState
	order   []string // paths, sorted
	missing bool     // the source's one file does not exist
	listErr error    // the directory cannot be listed
	listBad time.Time
	listRep bool   // listErr is reported (past grace): every target is stale
	version uint64 // 0 until the first read; +1 on every change
	ch      chan struct{}
}

func newLoader(s *Source) *loader {
	return &loader{s: s, log: s.opts.Log.With(zap.String("path", s.path)), files: map[string]*fileState{},
		probes: map[string]*probe{}, events: map[string]time.Time{}, ch: make(chan struct{})}
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
				l.notifying, l.trustFrom = true, time.Now()
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
			if strings.HasPrefix(filepath.Base(ev.Name), "..") {
				l.allEvent = now
			} else {
				l.events[ev.Name] = now
			}
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
			l.trustFrom = time.Now()
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
	o := l.s.opts
	grace := o.grace
	var next time.Time
	soonest := func(at time.Time) { // read again at at, or earlier
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	paths, err := l.candidates()
	if err != nil {
		return l.listFailed(now, err)
	}
	type result struct {
		data    []byte
		missing bool
		err     error
		busy    bool // still changing: nothing to conclude yet
		forced  bool // read while still changing (for longer than WithMaxSettle)
	}
	listed := make(map[string]bool, len(paths))
	for _, p := range paths {
		listed[p] = true
	}
	for p := range l.events { // forget what no longer matters
		if !listed[p] {
			delete(l.events, p)
		}
	}
	for p := range l.probes {
		if !listed[p] {
			delete(l.probes, p)
		}
	}
	results := make(map[string]result, len(paths))
	for _, p := range paths {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			results[p] = result{missing: true}
			delete(l.probes, p)
			continue
		case err != nil:
			results[p] = result{err: fmt.Errorf("file: %s: %v: %w", p, err, core.ErrUnavailable)}
			continue
		case fi.IsDir():
			results[p] = result{err: fmt.Errorf("file: %s: is a directory: %w", p, core.ErrInvalid)}
			continue
		}
		pr := l.probes[p]
		if pr == nil {
			pr = &probe{}
			l.probes[p] = pr
		}
		if key := keyOf(fi); pr.since.IsZero() || key != pr.key {
			if pr.busy.IsZero() {
				pr.busy = now
			}
			pr.key, pr.since = key, now
		}
		// Quiet: unchanged for the settle time by this process's clock; or,
		// with file-system events, no event on it for the settle time
		// since before this version was seen (every write would have
		// sent one).
		quiet := now.Sub(pr.since) >= o.settle
		if last := l.lastEvent(p); !quiet && !last.IsZero() && last.After(l.trustFrom) && now.Sub(last) >= o.settle {
			quiet = true
		}
		if !quiet && now.Sub(pr.busy) < o.maxSettle {
			results[p] = result{busy: true}
			soonest(pr.since.Add(o.settle))
			continue
		}
		if fi.Size() > o.maxSize {
			results[p] = result{err: &ParseError{Path: p, Reason: fmt.Sprintf("%d bytes, over the limit of %d (WithMaxSize)", fi.Size(), o.maxSize)}}
			pr.busy = time.Time{}
			continue
		}
		data, err := readWhole(p, o.maxSize)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			results[p] = result{missing: true}
			delete(l.probes, p)
			continue
		case errors.Is(err, errChanging):
			// Changed while read: not quiet after all.
			pr.since = now
			results[p] = result{busy: true}
			soonest(now.Add(o.settle))
			continue
		case err != nil:
			results[p] = result{err: fmt.Errorf("file: %s: %v: %w", p, err, core.ErrUnavailable)}
			continue
		}
		if quiet {
			pr.busy = time.Time{}
			results[p] = result{data: data}
			continue
		}
		// It kept changing for longer than the bound: what was read is
		// published, stale, and read again once the file is quiet.
		l.log.Warn("file: still being written; read anyway, published stale", zap.String("file", p),
			zap.Duration("changing_for", now.Sub(pr.busy)))
		pr.busy = now
		results[p] = result{data: data, forced: true}
		soonest(pr.since.Add(o.settle))
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.version == 0 {
		for _, r := range results {
			if r.busy {
				return next // nothing is published before every file was read once
			}
		}
	}
	changed := l.version == 0
	if l.listErr != nil {
		l.log.Info("file: the directory can be listed again")
		changed = changed || l.listRep
		l.listErr, l.listRep = nil, false
	}
	// Files no longer listed are missing.
	for p := range l.files {
		if _, ok := results[p]; !ok {
			results[p] = result{missing: true}
		}
	}
	missingOne := false
	for p, r := range results {
		if r.busy {
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
		if !r.forced && f.provisional && r.err == nil && bytes.Equal(r.data, f.data) {
			f.provisional, changed = false, true // the quiet file is what was read while it changed
		}
		if r.err != nil || f.data == nil || !bytes.Equal(r.data, f.data) {
			var defs map[core.Target]definition
			perr := r.err
			if perr == nil {
				defs, perr = parse(p, r.data, l.s.opts.parse)
			}
			f.data = r.data
			if perr == nil {
				f.good, f.err, f.rep, f.bad, f.provisional = defs, nil, false, time.Time{}, r.forced
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

// lastEvent is the time of the last file-system event that may have
// changed path (zero: none seen).
func (l *loader) lastEvent(path string) time.Time {
	if !l.notifying {
		return time.Time{}
	}
	t := l.events[path]
	if l.allEvent.After(t) {
		t = l.allEvent
	}
	return t
}

// listFailed records that the directory cannot be listed: what was read
// stays, and once the grace period has passed every target is stale with
// the reason.
func (l *loader) listFailed(now time.Time, err error) time.Time {
	err = fmt.Errorf("file: cannot list %s: %v: %w", l.s.path, err, core.ErrUnavailable)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listErr == nil {
		l.listBad = now
		l.log.Warn("file: cannot list the directory; keeping what was read", zap.Error(err))
	}
	changed := l.listRep && l.listErr.Error() != err.Error()
	l.listErr = err
	if !l.listRep && now.Sub(l.listBad) >= l.s.opts.grace {
		l.listRep, changed = true, true
	}
	if changed || l.version == 0 {
		l.version++
		close(l.ch)
		l.ch = make(chan struct{})
	}
	next := now.Add(l.s.opts.settle * 10)
	if at := l.listBad.Add(l.s.opts.grace); !l.listRep && at.Before(next) {
		next = at
	}
	return next
}

// errChanging means a file changed while it was read.
var errChanging = errors.New("changed while read")

// readWhole reads a file, following links, and makes sure it did not
// change meanwhile: same size and modification time before and after, and
// as many bytes as the size.
func readWhole(path string, limit int64) ([]byte, error) {
	before, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if before.IsDir() {
		return nil, errors.New("is a directory")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	f.Close()
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
