package plugin

// SetHostCookie makes hosts of this process use another cookie value, and
// returns the function that restores it.
func SetHostCookie(v string) (restore func()) {
	saved := handshake
	handshake.MagicCookieValue = v
	return func() { handshake = saved }
}
