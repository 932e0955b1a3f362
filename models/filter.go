package models

import (
	"fmt"
	"path"
	"slices"
	"sort"
)

// Filter selects metrics and fields by name, as Telegraf's metric filtering does. Patterns are
// globs (`*`, `?`, `[a-z]`; see path.Match). An empty filter passes everything.
type Filter struct {
	NamePass   []string            `toml:"namepass"`
	NameDrop   []string            `toml:"namedrop"`
	FieldPass  []string            `toml:"fieldpass"`
	FieldDrop  []string            `toml:"fielddrop"`
	TagPass    map[string][]string `toml:"tagpass"`
	TagDrop    map[string][]string `toml:"tagdrop"`
	TagInclude []string            `toml:"taginclude"`
	TagExclude []string            `toml:"tagexclude"`

	active  bool
	tagPass []tagGlob
	tagDrop []tagGlob
}

type tagGlob struct {
	key      string
	patterns []string
}

// Compile checks every pattern; it must be called before Select and Apply.
func (f *Filter) Compile() error {
	lists := []struct {
		key      string
		patterns []string
	}{
		{"namepass", f.NamePass}, {"namedrop", f.NameDrop},
		{"fieldpass", f.FieldPass}, {"fielddrop", f.FieldDrop},
		{"taginclude", f.TagInclude}, {"tagexclude", f.TagExclude},
	}
	for _, l := range lists {
		if err := checkGlobs(l.patterns); err != nil {
			return fmt.Errorf("%s: %w", l.key, err)
		}
	}
	var err error
	if f.tagPass, err = compileTagGlobs("tagpass", f.TagPass); err != nil {
		return err
	}
	if f.tagDrop, err = compileTagGlobs("tagdrop", f.TagDrop); err != nil {
		return err
	}
	f.active = len(f.NamePass)+len(f.NameDrop)+len(f.FieldPass)+len(f.FieldDrop)+
		len(f.TagPass)+len(f.TagDrop)+len(f.TagInclude)+len(f.TagExclude) > 0
	return nil
}

func checkGlobs(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("bad pattern %q", p)
		}
	}
	return nil
}

func compileTagGlobs(key string, m map[string][]string) ([]tagGlob, error) {
	out := make([]tagGlob, 0, len(m))
	for k, ps := range m {
		if err := checkGlobs(ps); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", key, k, err)
		}
		out = append(out, tagGlob{k, ps})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out, nil
}

// IsActive reports whether the filter would change or drop anything.
func (f *Filter) IsActive() bool { return f.active }

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

func matchTags(globs []tagGlob, tags []Tag) bool {
	for _, g := range globs {
		for _, t := range tags {
			if t.Key == g.key && matchAny(g.patterns, t.Value) {
				return true
			}
		}
	}
	return false
}

// Select reports whether the metric passes the name and tag filters.
func (f *Filter) Select(m *Metric) bool {
	if !f.active {
		return true
	}
	if len(f.NamePass) > 0 && !matchAny(f.NamePass, m.Name) {
		return false
	}
	if len(f.NameDrop) > 0 && matchAny(f.NameDrop, m.Name) {
		return false
	}
	if len(f.tagPass) > 0 && !matchTags(f.tagPass, m.Tags) {
		return false
	}
	if len(f.tagDrop) > 0 && matchTags(f.tagDrop, m.Tags) {
		return false
	}
	return true
}

// Modify applies fieldpass/fielddrop and taginclude/tagexclude to m in place. It reports false
// when no field is left, so that the caller drops the metric.
func (f *Filter) Modify(m *Metric) bool {
	if !f.active {
		return true
	}
	if len(f.FieldPass) > 0 || len(f.FieldDrop) > 0 {
		m.Fields = slices.DeleteFunc(m.Fields, func(fl Field) bool {
			return (len(f.FieldPass) > 0 && !matchAny(f.FieldPass, fl.Key)) ||
				(len(f.FieldDrop) > 0 && matchAny(f.FieldDrop, fl.Key))
		})
	}
	if len(f.TagInclude) > 0 || len(f.TagExclude) > 0 {
		drop := func(t Tag) bool {
			return (len(f.TagInclude) > 0 && !matchAny(f.TagInclude, t.Key)) ||
				(len(f.TagExclude) > 0 && matchAny(f.TagExclude, t.Key))
		}
		if slices.ContainsFunc(m.Tags, drop) {
			m.Tags = slices.DeleteFunc(slices.Clone(m.Tags), drop) // tags may be shared: copy
		}
	}
	return len(m.Fields) > 0
}
