package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// A window's line: calls per second, failures, each live pod's share of
// the window (not since the start), gone pods named; never over 100
// columns, however many pods.
func TestStatusLine(t *testing.T) {
	t0 := time.Now()
	prev := snapshot{at: t0, ok: 100, perPod: map[string]int64{"greeter-0": 50, "greeter-1": 50}}
	now := snapshot{at: t0.Add(time.Second), ok: 400, failed: 2, perPod: map[string]int64{"greeter-0": 50, "greeter-1": 200, "greeter-2": 150}}
	got := statusLine("restart", prev, now, []string{"greeter-1", "greeter-2"}, []string{"greeter-0"})
	want := "   restart           302 calls/s   2 failed | 1:50% 2:50% | gone: 0"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	var live []string
	per := map[string]int64{}
	for i := range 60 {
		name := fmt.Sprintf("greeter-%d", 100+i)
		live = append(live, name)
		per[name] = 10
	}
	long := statusLine("scale up", snapshot{at: t0, perPod: map[string]int64{}}, snapshot{at: t0.Add(time.Second), ok: 600, perPod: per}, live, []string{"greeter-1", "greeter-2"})
	if n := utf8.RuneCountInString(long); n > width || !strings.Contains(long, "+") || !strings.HasSuffix(long, "gone: 1,2") {
		t.Fatalf("60 pods: %d columns: %q", n, long)
	}
}

func TestSpreadAndSummary(t *testing.T) {
	per := map[string]int64{"a": 100, "b": 110, "gone": 5}
	if s := spread(per, []string{"a", "b"}); s < 1.09 || s > 1.11 {
		t.Fatalf("spread %v", s)
	}
	if s := spread(per, []string{"a", "c"}); s != 0 {
		t.Fatalf("a live pod without calls: spread %v, want 0 (shown as -)", s)
	}
	lines := summaryLines([]phaseResult{{name: "steady", calls: 1000, live: 2, spread: 1.1}, {name: "scale down", calls: 10, failed: 1, live: 1}})
	if !strings.Contains(lines[1], "steady") || !strings.HasSuffix(lines[1], "1.10") || !strings.HasSuffix(lines[2], "-") {
		t.Fatalf("%q", lines)
	}
}
