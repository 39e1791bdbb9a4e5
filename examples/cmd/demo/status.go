package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// width is the most a status line may take: it must not wrap in a
// terminal of 100 columns.
const width = 100

// tally counts the client's calls: in total, per pod.
type tally struct {
	mu     sync.Mutex
	ok     int64
	failed int64
	perPod map[string]int64
}

func newTally() *tally { return &tally{perPod: map[string]int64{}} }

func (t *tally) success(pod string) {
	t.mu.Lock()
	t.ok++
	t.perPod[pod]++
	t.mu.Unlock()
}

func (t *tally) failure() {
	t.mu.Lock()
	t.failed++
	t.mu.Unlock()
}

// snapshot is the tally at one moment.
type snapshot struct {
	at         time.Time
	ok, failed int64
	perPod     map[string]int64
}

func (t *tally) snapshot() snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	per := make(map[string]int64, len(t.perPod))
	for k, v := range t.perPod {
		per[k] = v
	}
	return snapshot{at: time.Now(), ok: t.ok, failed: t.failed, perPod: per}
}

// since is what happened between earlier and s, per pod.
func (s snapshot) since(earlier snapshot) (ok, failed int64, perPod map[string]int64) {
	perPod = map[string]int64{}
	for k, v := range s.perPod {
		if d := v - earlier.perPod[k]; d > 0 {
			perPod[k] = d
		}
	}
	return s.ok - earlier.ok, s.failed - earlier.failed, perPod
}

// podLabel is how a pod is named in a status line: its number
// (greeter-12 is 12), or its name if it has none.
func podLabel(name string) string {
	if i := strings.LastIndexByte(name, '-'); i >= 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[i+1:]
		}
	}
	return name
}

// statusLine is one window of the load: calls per second, failures, and
// the share each live pod took of the window's calls ("3:34%": pod
// greeter-3, 34%). Pods that left since the last line are named once as
// gone. It never exceeds width: pods beyond are counted as "+N".
func statusLine(phase string, prev, now snapshot, live []string, gone []string) string {
	ok, failed, per := now.since(prev)
	secs := now.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		secs = 1
	}
	var sum int64
	for _, p := range live {
		sum += per[p]
	}
	head := fmt.Sprintf("   %-15s %5.0f calls/s %3d failed | ", phase, float64(ok+failed)/secs, failed)
	var tail string
	if len(gone) > 0 {
		labels := make([]string, len(gone))
		for i, g := range gone {
			labels[i] = podLabel(g)
		}
		tail = " | gone: " + strings.Join(labels, ",")
	}
	line := head
	for i, p := range live {
		cell := fmt.Sprintf("%s:%.0f%% ", podLabel(p), 100*float64(per[p])/float64(max(sum, 1)))
		more := fmt.Sprintf("+%d ", len(live)-i)
		if len(line)+len(cell)+len(more)+len(tail) > width && i < len(live)-1 || len(line)+len(cell)+len(tail) > width {
			line += more
			break
		}
		line += cell
	}
	line = strings.TrimRight(line, " ") + tail
	if len(line) > width {
		line = line[:width-1] + "…"
	}
	return line
}

// phaseResult is one phase of the demo, for the summary.
type phaseResult struct {
	name          string
	calls, failed int64
	live          int
	// spread is the busiest live pod's calls over the least busy one's
	// while the phase was steady (1.00: perfectly even; 0: no calls).
	spread float64
}

// spread is max/min of the calls of the live pods.
func spread(per map[string]int64, live []string) float64 {
	if len(live) == 0 {
		return 0
	}
	var counts []int64
	for _, p := range live {
		counts = append(counts, per[p])
	}
	slices.Sort(counts)
	if counts[0] == 0 {
		return 0
	}
	return float64(counts[len(counts)-1]) / float64(counts[0])
}

// summaryLines is the table at the end: per phase, calls, failures and
// how evenly the live pods shared the calls.
func summaryLines(phases []phaseResult) []string {
	out := []string{fmt.Sprintf("   %-22s %9s %7s %10s %20s", "phase", "calls", "failed", "live pods", "busiest/least busy")}
	for _, p := range phases {
		even := "-"
		if p.spread > 0 {
			even = fmt.Sprintf("%.2f", p.spread)
		}
		out = append(out, fmt.Sprintf("   %-22s %9d %7d %10d %20s", p.name, p.calls, p.failed, p.live, even))
	}
	return out
}
