package inpod

import (
	"slices"
	"strings"
)

// ownChain reports whether chain is one this package creates.
func ownChain(chain string) bool {
	return chain == ChainPrerouting || chain == ChainOutput || chain == ChainInput
}

// saveRules parses iptables-save output into table -> set of rule lines
// ("-A CHAIN ...") -> number of occurrences, and table -> declared chains,
// in order.
func saveRules(save string) (rules map[string]map[string]int, chains map[string][]string) {
	rules = map[string]map[string]int{}
	chains = map[string][]string{}
	table := ""
	for line := range strings.Lines(save) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			if rules[table] == nil {
				rules[table] = map[string]int{}
			}
		case table == "":
		case strings.HasPrefix(line, ":"):
			if name, _, ok := strings.Cut(line[1:], " "); ok {
				chains[table] = append(chains[table], name)
			}
		case strings.HasPrefix(line, "-A "):
			rules[table][line]++
		}
	}
	return rules, chains
}

// applyScript returns the iptables-restore --noflush input that brings the
// state in iptables-save output save to restore: restore without the
// "-A <built-in chain> ..." lines save already contains, so applying it
// again does not duplicate the jumps into our chains (our own chains are
// declared in restore, which flushes them, so their rules are kept),
// preceded by the removal of our chains that restore does not declare (left
// by a ruleset of another IPv6 mode).
func applyScript(restore, save string) string {
	declared := map[[2]string]bool{}
	table := ""
	for line := range strings.Lines(restore) {
		line = strings.TrimSpace(line)
		if t, ok := strings.CutPrefix(line, "*"); ok {
			table = t
		} else if c, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ := strings.Cut(c, " ")
			declared[[2]string{table, name}] = true
		}
	}
	stale := removalScript(save, func(table, chain string) bool { return !declared[[2]string{table, chain}] })
	return stale + withoutExistingJumps(restore, save)
}

// withoutExistingJumps returns restore without the jump lines from built-in
// chains that save already contains (see applyScript).
func withoutExistingJumps(restore, save string) string {
	existing, _ := saveRules(save)
	var b strings.Builder
	table := ""
	for line := range strings.Lines(restore) {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "*") {
			table = trimmed[1:]
		}
		if chain, ok := appendedChain(trimmed); ok && !ownChain(chain) && existing[table][trimmed] > 0 {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// appendedChain returns the chain of a "-A CHAIN ..." rule line.
func appendedChain(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "-A ")
	if !ok {
		return "", false
	}
	chain, _, _ := strings.Cut(rest, " ")
	return chain, true
}

// removalScript returns iptables-restore --noflush input that deletes every
// rule jumping to our chains and then flushes and deletes the chains, for
// the state in iptables-save output save, limited to the chains for which
// include(table, chain) is true. It is empty when none of those is present.
func removalScript(save string, include func(table, chain string) bool) string {
	rules, chains := saveRules(save)
	tables := make([]string, 0, len(chains))
	for t := range chains {
		tables = append(tables, t)
	}
	slices.Sort(tables)
	var b strings.Builder
	for _, t := range tables {
		var own []string
		for _, c := range chains[t] {
			if ownChain(c) && include(t, c) {
				own = append(own, c)
			}
		}
		if len(own) == 0 {
			continue
		}
		var dels []string
		for r, n := range rules[t] {
			chain, _ := appendedChain(r)
			if ownChain(chain) {
				continue
			}
			for _, c := range own {
				if strings.HasSuffix(r, " -j "+c) || strings.Contains(r, " -j "+c+" ") ||
					strings.HasSuffix(r, " -g "+c) || strings.Contains(r, " -g "+c+" ") {
					for range n {
						dels = append(dels, "-D "+strings.TrimPrefix(r, "-A "))
					}
					break
				}
			}
		}
		slices.Sort(dels)
		b.WriteString("*" + t + "\n")
		for _, d := range dels {
			b.WriteString(d + "\n")
		}
		for _, c := range own {
			b.WriteString("-F " + c + "\n")
		}
		for _, c := range own {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}
