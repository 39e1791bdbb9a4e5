package route

import (
	"cmp"
	"slices"
)

// Subsets gives each of many clients a subset of k backends, so that a
// client of a 1,000-pod service keeps k connections, not 1,000. It is for
// a server that sees every client of a target (the xDS server: one Subsets
// per target) and remembers what it gave each client, which lets it keep
// both promises at once:
//
//   - balance: every backend has ⌊m⌋ or ⌈m⌉ clients, m = clients × k /
//     backends (as even as whole numbers allow);
//   - low churn: a change moves only the connections it must. An added
//     backend takes about m connections, one from each of about m clients;
//     a removed backend's clients each get one replacement; a client that
//     comes moves no other client's connection, one that goes at most k.
//
// Which backends a client gets, when it has a choice, follows a
// rendezvous hash of (client, backend), so the same inputs give the same
// subsets in any process. What it holds is the last assignment: a fresh
// Subsets (a restarted server) balances as well, but may give a client
// other backends than the last one did.
//
// Deterministic subsetting (the SRE book's) balances as well but moves
// about half the connections of every client on a resize; a rendezvous
// top-k per client (Rendezvous, gRFC A68's random subsetting) moves the
// fewest but leaves backends with from ~0.3 to ~2 times the mean at these
// sizes. Not safe for concurrent use.
type Subsets struct {
	k  int
	of map[string][]string // client → its backends
}

// NewSubsets returns subsets of k backends per client (k < 1 is 1).
func NewSubsets(k int) *Subsets { return &Subsets{k: max(k, 1), of: map[string][]string{}} }

// K returns the subset size.
func (s *Subsets) K() int { return s.k }

// Of returns client's backends from the last Assign, sorted (nil: not
// a client then).
func (s *Subsets) Of(client string) []string { return s.of[client] }

// Assign computes every client's subset of backends (duplicates in either
// list count once) from the last assignment, and returns the clients whose
// subset changed (a new client counts; a client gone does not). A client
// gets every backend when there are k or fewer.
func (s *Subsets) Assign(clients, backends []string) (changed []string) {
	clients = dedupe(clients)
	backends = dedupe(backends)
	next := make(map[string][]string, len(clients))
	if len(backends) > 0 {
		s.assign(clients, backends, next)
	}
	for _, c := range clients {
		if !slices.Equal(s.of[c], next[c]) {
			changed = append(changed, c)
		}
	}
	s.of = next
	return changed
}

func dedupe(xs []string) []string {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return slices.Compact(xs)
}

func (s *Subsets) assign(clients, backends []string, next map[string][]string) {
	k := min(s.k, len(backends))
	exists := make(map[string]bool, len(backends))
	for _, b := range backends {
		exists[b] = true
	}
	if k == len(backends) {
		for _, c := range clients {
			next[c] = backends
		}
		return
	}
	total := len(clients) * k
	lo, extra := total/len(backends), total%len(backends) // extra backends may have lo+1
	load := make(map[string]int, len(backends))
	holders := make(map[string][]string, len(backends)) // backend → its clients

	// Keep what each client had and still exists (its best k by score).
	for _, c := range clients {
		var keep []string
		for _, b := range s.of[c] {
			if exists[b] {
				keep = append(keep, b)
			}
		}
		if len(keep) > k {
			slices.SortFunc(keep, func(a, b string) int { return cmp.Compare(score(c, b), score(c, a)) })
			keep = keep[:k]
		}
		next[c] = keep
		for _, b := range keep {
			load[b]++
			holders[b] = append(holders[b], c)
		}
	}
	// Shed what is over: no backend above lo+1, at most extra at lo+1. A
	// backend sheds a client not shed yet if it can (each shed client
	// refills one slot, with a backend below lo), the one that scores it
	// lowest; among backends at lo+1, those that score lowest on their own
	// shed first.
	shed := map[string]int{}
	shedOne := func(b string) {
		hs := holders[b]
		i := 0
		for j := 1; j < len(hs); j++ {
			if c := cmp.Compare(shed[hs[j]], shed[hs[i]]); c < 0 || (c == 0 && score(hs[j], b) < score(hs[i], b)) {
				i = j
			}
		}
		c := hs[i]
		shed[c]++
		next[c] = slices.DeleteFunc(next[c], func(x string) bool { return x == b })
		load[b]--
		holders[b] = slices.Delete(hs, i, i+1)
	}
	for _, b := range backends {
		for load[b] > lo+1 {
			shedOne(b)
		}
	}
	var high []string
	for _, b := range backends {
		if load[b] == lo+1 {
			high = append(high, b)
		}
	}
	if len(high) > extra {
		slices.SortFunc(high, func(x, y string) int { return cmp.Compare(score("", x), score("", y)) })
		for _, b := range high[:len(high)-extra] {
			shedOne(b)
		}
		high = high[len(high)-extra:]
	}
	atHigh := len(high)

	// Fill: each client short of k takes, by its own scores, the backends
	// below lo first, then those at lo while fewer than extra are above it.
	// The order of clients is by hash, so no name is favoured.
	order := slices.Clone(clients)
	slices.SortFunc(order, func(x, y string) int { return cmp.Compare(score(x, ""), score(y, "")) })
	for _, c := range order {
		need := k - len(next[c])
		if need == 0 {
			continue
		}
		ranked := byScore(c, backends)
		for ; need > 0; need-- {
			pick := ""
			for pass := 0; pass < 2 && pick == ""; pass++ {
				for _, b := range ranked {
					if slices.Contains(next[c], b) {
						continue
					}
					if load[b] < lo || (pass == 1 && load[b] == lo && atHigh < extra) {
						pick = b
						break
					}
				}
			}
			if pick == "" {
				if x, y := swap(c, clients, backends, next, load, lo, extra, atHigh); x != "" {
					if load[y] == lo {
						atHigh++
					}
					load[y]++
					next[c] = append(next[c], x)
					continue
				}
			}
			if pick == "" { // no way within the bounds: the best-scored left
				for _, b := range ranked {
					if !slices.Contains(next[c], b) {
						pick = b
						break
					}
				}
			}
			if load[pick] == lo {
				atHigh++
			}
			load[pick]++
			next[c] = append(next[c], pick)
		}
	}
	for _, c := range clients {
		slices.Sort(next[c])
	}
}

// swap frees a backend for c when every backend with room is already c's:
// another client d holding x (not c's) moves from x to y (with room, not
// d's), and c takes x. It returns x and y ("" when no such pair exists);
// the caller counts y's load.
func swap(c string, clients, backends []string, next map[string][]string, load map[string]int, lo, extra, atHigh int) (x, y string) {
	for _, y = range backends {
		if !(load[y] < lo || (load[y] == lo && atHigh < extra)) {
			continue
		}
		for _, d := range clients {
			if d == c || slices.Contains(next[d], y) {
				continue
			}
			for i, x := range next[d] {
				if !slices.Contains(next[c], x) {
					next[d][i] = y
					return x, y
				}
			}
		}
	}
	return "", ""
}

// Rendezvous returns the k of ids that score highest for seed by the same
// rendezvous hash as Subsets: a client's own subset when it cannot see the
// other clients (a connection pool, an in-process resolver). The same seed
// keeps the same subset, and a change of ids moves at most one id per id
// added or removed; across many seeds a backend gets about k/len(ids) of
// the clients, but unevenly (binomially): seeds should be unique per
// client (a pod name). Sorted; all of ids when k ≥ len(ids).
func Rendezvous(seed string, ids []string, k int) []string {
	ids = dedupe(ids)
	if k >= len(ids) {
		return ids
	}
	out := byScore(seed, ids)[:max(k, 0)]
	slices.Sort(out)
	return out
}

// byScore returns ids, highest score for client first (a new slice).
func byScore(client string, ids []string) []string {
	type scored struct {
		id string
		s  uint64
	}
	ss := make([]scored, len(ids))
	for i, id := range ids {
		ss[i] = scored{id, score(client, id)}
	}
	slices.SortFunc(ss, func(a, b scored) int { return cmp.Compare(b.s, a.s) })
	out := make([]string, len(ids))
	for i := range ss {
		out[i] = ss[i].id
	}
	return out
}

// score is the rendezvous hash of (client, backend): FNV-1a over both,
// finished by a 64-bit mixer, the same in every process.
func score(client, backend string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(client); i++ {
		h = (h ^ uint64(client[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(backend); i++ {
		h = (h ^ uint64(backend[i])) * prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
