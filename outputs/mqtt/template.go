package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"text/template/parse"
	"unicode/utf8"

	"github.com/tagpipe/tagpipe/models"
)

// template is a topic (or Sparkplug metric name) template: Go template syntax, parsed by
// text/template/parse, limited to the parts a topic needs ({{.Name}}, {{.Tag "key"}} and, for
// metric names, {{.Field}}) and compiled into a list of parts that expand by appending to a
// buffer. Executing a text/template per metric would allocate and reflect on every call; the
// hot path needs neither.
type template struct {
	src   string
	parts []part
}

type partKind uint8

const (
	literal partKind = iota
	nameRef
	tagRef
	fieldRef
)

type part struct {
	kind partKind
	text string // the literal, or the tag key
}

// parseTemplate parses src; withField allows {{.Field}}.
func parseTemplate(src string, withField bool) (*template, error) {
	if src == "" {
		return nil, errors.New("empty")
	}
	// Functions are not checked at parse: any call is refused below with the same message.
	tree := parse.New("topic")
	tree.Mode = parse.SkipFuncCheck
	trees := map[string]*parse.Tree{}
	if _, err := tree.Parse(src, "{{", "}}", trees); err != nil {
		return nil, fmt.Errorf("%q: %v", src, strings.TrimPrefix(err.Error(), "template: "))
	}
	t := &template{src: src}
	if len(trees) != 1 || tree.Root == nil {
		return nil, fmt.Errorf("%q: only {{.Name}}, {{.Tag \"key\"}} and text may appear", src)
	}
	allowed := `{{.Name}} and {{.Tag "key"}}`
	if withField {
		allowed = `{{.Name}}, {{.Tag "key"}} and {{.Field}}`
	}
	for _, n := range tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			if err := checkLiteral(string(n.Text)); err != nil {
				return nil, err
			}
			t.parts = append(t.parts, part{kind: literal, text: string(n.Text)})
		case *parse.ActionNode:
			p, ok := actionPart(n, withField)
			if !ok {
				return nil, fmt.Errorf("%q: %s is not allowed: use %s", src, n.String(), allowed)
			}
			t.parts = append(t.parts, p)
		default:
			return nil, fmt.Errorf("%q: %s is not allowed: use %s", src, n.String(), allowed)
		}
	}
	return t, nil
}

// actionPart recognizes {{.Name}}, {{.Tag "key"}} and {{.Field}}.
func actionPart(n *parse.ActionNode, withField bool) (part, bool) {
	if n.Pipe == nil || len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 {
		return part{}, false
	}
	args := n.Pipe.Cmds[0].Args
	f, ok := args[0].(*parse.FieldNode)
	if !ok || len(f.Ident) != 1 {
		return part{}, false
	}
	switch {
	case f.Ident[0] == "Name" && len(args) == 1:
		return part{kind: nameRef}, true
	case f.Ident[0] == "Field" && len(args) == 1 && withField:
		return part{kind: fieldRef}, true
	case f.Ident[0] == "Tag" && len(args) == 2:
		if s, ok := args[1].(*parse.StringNode); ok && s.Text != "" {
			return part{kind: tagRef, text: s.Text}, true
		}
	}
	return part{}, false
}

// checkLiteral refuses the characters a topic to publish to cannot hold: the wildcards + and
// #, NUL, and bytes that are not UTF-8.
func checkLiteral(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '+', '#':
			return fmt.Errorf("%q: %q is a wildcard, not allowed in a topic to publish to", s, s[i])
		case 0:
			return fmt.Errorf("%q: NUL is not allowed in a topic", s)
		}
	}
	return nil
}

// usesField reports whether the template has {{.Field}}.
func (t *template) usesField() bool {
	for _, p := range t.parts {
		if p.kind == fieldRef {
			return true
		}
	}
	return false
}

// appendTo appends the template expanded for m (and field, for {{.Field}}) to dst. Values
// are escaped with escape; it returns how many characters were replaced.
func (t *template) appendTo(dst []byte, m *models.Metric, field string, escape func([]byte, string) ([]byte, int)) ([]byte, int) {
	n := 0
	for _, p := range t.parts {
		var k int
		switch p.kind {
		case literal:
			dst = append(dst, p.text...)
		case nameRef:
			dst, k = escape(dst, m.Name)
		case tagRef:
			if v, ok := m.Tag(p.text); ok {
				dst, k = escape(dst, v)
			}
		case fieldRef:
			dst, k = escape(dst, field)
		}
		n += k
	}
	return dst, n
}

// escapeTopic appends s with +, # and NUL (and bytes that are not UTF-8) replaced by _: a
// tag value must not turn a topic into a filter. It returns how many were replaced.
func escapeTopic(dst []byte, s string) ([]byte, int) {
	return escapeBytes(dst, s, "+#\x00")
}

// escapeLevel escapes like escapeTopic and also replaces /: a Sparkplug id is one topic level.
func escapeLevel(dst []byte, s string) ([]byte, int) {
	return escapeBytes(dst, s, "+#/\x00")
}

// escapeNone appends s as it is (Sparkplug metric names are payload, not topic).
func escapeNone(dst []byte, s string) ([]byte, int) { return append(dst, s...), 0 }

func escapeBytes(dst []byte, s, bad string) ([]byte, int) {
	n := 0
	clean := true
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(bad, s[i]) >= 0 || s[i] >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return append(dst, s...), 0
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			dst = append(dst, '_')
			n++
		case r < utf8.RuneSelf && strings.IndexByte(bad, byte(r)) >= 0:
			dst = append(dst, '_')
			n++
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst, n
}
