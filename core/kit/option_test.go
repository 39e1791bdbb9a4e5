package kit_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core/kit"
)

type conf struct {
	kit.Common
	timeout time.Duration
	n       int
}

func withTimeout(d time.Duration) kit.Option[*conf] {
	return kit.Checked(kit.Positive("WithTimeout", d, time.Minute), func(c *conf) { c.timeout = d })
}

func withN(n int) kit.Option[*conf] {
	return kit.Checked(kit.Between("WithN", n, 1, 64), func(c *conf) { c.n = n })
}

// A bad value is an error at construction naming the option, the value and
// what it allows; good ones apply in order; nil options and a nil logger
// are harmless.
func TestOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		opts []kit.Option[*conf]
		want string
	}{
		{[]kit.Option[*conf]{withTimeout(0)}, "option WithTimeout(0s): want more than 0 and at most 1m0s"},
		{[]kit.Option[*conf]{withTimeout(2 * time.Minute)}, "option WithTimeout(2m0s): want more than 0 and at most 1m0s"},
		{[]kit.Option[*conf]{withN(0)}, "option WithN(0): want 1 to 64"},
		{[]kit.Option[*conf]{kit.WithBackoff[*conf]("WithBackoff", time.Second, time.Millisecond)}, "option WithBackoff(1s, 1ms): want 0 < min <= max <= 24h"},
		{[]kit.Option[*conf]{withN(3), withTimeout(-time.Second)}, "option WithTimeout(-1s)"},
	} {
		err := kit.Apply(&conf{}, tc.opts...)
		var oe *kit.OptionError
		if !errors.As(err, &oe) || err.Error()[:len(tc.want)] != tc.want {
			t.Errorf("Apply = %v, want %q", err, tc.want)
		}
	}
	c := &conf{}
	if err := kit.Apply(c, withN(3), nil, withTimeout(time.Second), kit.WithLogger[*conf](nil),
		kit.WithBackoff[*conf]("WithBackoff", time.Millisecond, time.Second)); err != nil {
		t.Fatal(err)
	}
	if c.n != 3 || c.timeout != time.Second || c.Log == nil || c.Backoff.Max != time.Second {
		t.Fatalf("applied %+v", c)
	}
	l := zap.NewExample()
	if err := kit.Apply(c, kit.WithLogger[*conf](l)); err != nil || c.Log != l {
		t.Fatal("WithLogger did not set the logger")
	}
	if err := kit.NonNegative("WithLinger", 0, time.Hour); err != nil {
		t.Fatalf("0 turns a linger off: %v", err)
	}
}
