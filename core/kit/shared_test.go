package kit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/disco-lb/disco/core/kit"
)

func TestSharedCountsUsersAndLingers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var started, stopped atomic.Int32
		s := kit.NewShared(func(k string, _ <-chan struct{}) string { started.Add(1); return "v-" + k },
			func(k, v string) { stopped.Add(1) }, time.Minute)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if v, err := s.Acquire("a"); err != nil || v != "v-a" {
					t.Errorf("Acquire = %q, %v", v, err)
				}
			})
		}
		wg.Wait()
		for range 10 {
			s.Release("a")
		}
		s.Release("a") // one too many: ignored
		if started.Load() != 1 || stopped.Load() != 0 || s.Len() != 1 {
			t.Fatalf("started %d stopped %d len %d: want one value, lingering", started.Load(), stopped.Load(), s.Len())
		}
		time.Sleep(30 * time.Second)
		if _, err := s.Acquire("a"); err != nil { // back within the grace period
			t.Fatal(err)
		}
		s.Release("a")
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if started.Load() != 1 || stopped.Load() != 0 {
			t.Fatalf("stopped during the grace period")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if stopped.Load() != 1 || s.Len() != 0 {
			t.Fatalf("not stopped after the grace period")
		}
		if _, err := s.Acquire("b"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s.Close()
		if stopped.Load() != 2 {
			t.Fatal("Close did not stop the held value")
		}
		if _, err := s.Acquire("c"); err == nil {
			t.Fatal("Acquire after Close")
		}
	})
}

func TestBackoff(t *testing.T) {
	b := kit.Backoff{Min: time.Second, Max: 10 * time.Second}
	for attempt, step := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
		step *= time.Second
		for range 100 {
			if d := b.Delay(attempt); d < step/2 || d > step {
				t.Fatalf("attempt %d: %v, want within [%v, %v]", attempt, d, step/2, step)
			}
		}
	}
	if d := (kit.Backoff{}).Delay(0); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("zero Backoff: %v, want the default 100ms step", d)
	}
	if d := (kit.Backoff{}).Delay(1000); d > 30*time.Second {
		t.Fatalf("default cap: %v", d)
	}
}

func TestSleep(t *testing.T) {
	if !kit.Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of 1ms did not report the delay passed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if kit.Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with an ended context reported the delay passed")
	}
}
