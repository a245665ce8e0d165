package oci

import "strings"

// challenge is one challenge of a WWW-Authenticate header (RFC 9110
// 11.6.1): a scheme and its parameters, names lowercased.
type challenge struct {
	scheme string // lowercase: "bearer", "basic", ...
	params map[string]string
}

// Bounds on what a header may make the parser keep.
const (
	maxChallenges = 8
	maxParams     = 16
)

// parseChallenges reads the challenges of WWW-Authenticate header values,
// as in `Bearer realm="https://auth.example/token",service="reg",
// scope="repository:a/b:pull", Basic realm="x"`. It is lenient where
// registries are sloppy (spaces around '=', a stray comma) and never
// fails: what it cannot read ends the challenge being read. A token68
// (`Basic abc==`) is kept under the parameter name "".
//
// oras-go's auth package has such a parser, but unexported, and it reads
// only the first challenge's parameters; this one is fuzzed here.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		p := &headerParser{s: v}
		for len(out) < maxChallenges {
			p.skip(", \t")
			scheme := p.token()
			if scheme == "" {
				break
			}
			c := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
			p.readParams(&c)
			out = append(out, c)
		}
	}
	return out
}

type headerParser struct {
	s string
	i int
}

func (p *headerParser) skip(set string) {
	for p.i < len(p.s) && strings.IndexByte(set, p.s[p.i]) >= 0 {
		p.i++
	}
}

// token reads a run of tchar (RFC 9110 5.6.2).
func (p *headerParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// readParams reads `name=value` pairs separated by commas until the next
// challenge (a token not followed by '=') or the end.
func (p *headerParser) readParams(c *challenge) {
	p.skip(" \t")
	// A token68 ("Basic dXNlcg==") is one run of token68 characters
	// followed by the end or a comma, with no '=' pair inside.
	if t, ok := p.token68(); ok {
		c.params[""] = t
		return
	}
	for len(c.params) < maxParams {
		p.skip(", \t")
		save := p.i
		name := p.token()
		if name == "" {
			return
		}
		p.skip(" \t")
		if p.i >= len(p.s) || p.s[p.i] != '=' {
			p.i = save // the next challenge's scheme
			return
		}
		p.i++
		p.skip(" \t")
		var value string
		if p.i < len(p.s) && p.s[p.i] == '"' {
			value = p.quoted()
		} else {
			value = p.token()
		}
		c.params[strings.ToLower(name)] = value
		p.skip(" \t")
		if p.i < len(p.s) && p.s[p.i] != ',' {
			return // garbage: stop reading this value
		}
	}
}

// token68 reads a token68 (RFC 9110 11.2) if that is what comes next:
// its characters, optional '=' padding, then the end or a comma. A name
// followed by '=' and a value is a parameter instead.
func (p *headerParser) token68() (string, bool) {
	j := p.i
	for j < len(p.s) && isToken68Char(p.s[j]) {
		j++
	}
	k := j
	for k < len(p.s) && p.s[k] == '=' {
		k++
	}
	rest := strings.TrimLeft(p.s[k:], " \t")
	if j == p.i || rest != "" && rest[0] != ',' {
		return "", false
	}
	t := p.s[p.i:k]
	p.i = k
	return t, true
}

func isToken68Char(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0
}

// quoted reads a quoted-string, backslash escapes undone; an unclosed one
// runs to the end.
func (p *headerParser) quoted() string {
	p.i++ // the opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && p.i < len(p.s):
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
