package config

// KeyLines returns the line of every table header and key of a TOML text by its path with
// array-table indices ("inputs.modbus[1].request[0].fields"): the first line where the path
// occurs. Values are not read, so a key inside an inline table has no line of its own. Tools
// that report on a configuration (tagpipe import) name places with it.
func KeyLines(text string) map[string]int {
	sc := scanTOML(text)
	m := make(map[string]int, len(sc.headers)+len(sc.keys))
	add := func(path string, line int32) {
		if _, ok := m[path]; !ok {
			m[path] = int(line)
		}
	}
	for _, k := range sc.rootKeys() {
		add(k.key, k.line)
	}
	for h, hd := range sc.headers {
		add(hd.path, hd.line)
		for _, k := range sc.keysOf(h) {
			add(hd.path+"."+k.key, k.line)
		}
	}
	return m
}
