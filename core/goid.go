package core

import (
	"bytes"
	"runtime"
	"strconv"
)

// goid returns the current goroutine's ID, read from its stack header
// ("goroutine 42 [running]:"). Only Close uses it, to tell a sink that
// closes its own subscription from inside Accept (which must not wait for
// itself) from any other caller.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
