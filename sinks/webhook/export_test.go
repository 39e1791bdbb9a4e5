package webhook

// Tracked returns how many targets the sender keeps records of (retry
// counts, pending times).
func (s *Sender) Tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(len(s.pending), len(s.tlsRun))
}
