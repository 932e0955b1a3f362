package importer

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xuri/excelize/v2"

	"github.com/tagpipe/tagpipe/inputs/modbus"
)

// TagListOptions say how tag lists become a configuration.
type TagListOptions struct {
	// Profile names the profile of a single tag list (default: the file's name).
	Profile string
	// Controller and SlaveID add one device of that profile when no device list is given.
	Controller string
	SlaveID    int // -1: the tag list's unit (Neuron), else 1
}

// sheet is a tag list as rows of cells; row 1 is the header.
type sheet struct {
	file string
	rows [][]string
	col  map[string]int // header name (lower case, spaces as _) → column index
	rep  *Report
}

// header returns the column's name as the file writes it.
func (s *sheet) header(name string) string {
	if c, ok := s.col[name]; ok && strings.TrimSpace(s.rows[0][c]) != "" {
		return strings.TrimSpace(s.rows[0][c])
	}
	return name
}

// cell returns the cell of row r (0-based index into rows) in column name, trimmed.
func (s *sheet) cell(r int, name string) string {
	c, ok := s.col[name]
	if !ok || c >= len(s.rows[r]) {
		return ""
	}
	return strings.TrimSpace(s.rows[r][c])
}

// bad reports a cell: FILE:ROW:COLUMN.
func (s *sheet) bad(r int, name string, kind Kind, format string, args ...any) {
	col := 0
	if c, ok := s.col[name]; ok {
		col = c + 1
	}
	s.rep.add(Issue{File: s.file, Line: r + 1, Column: col, Key: s.header(name), Kind: kind, Msg: fmt.Sprintf(format, args...)})
}

// readSheet reads a CSV file (comma, semicolon or tab separated, with or without a byte order
// mark) or the first sheet of an xlsx workbook.
func readSheet(path string, rep *Report) (*sheet, error) {
	var rows [][]string
	if strings.EqualFold(filepath.Ext(path), ".xlsx") {
		f, err := excelize.OpenFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer f.Close()
		sheets := f.GetSheetList()
		if len(sheets) == 0 {
			return nil, fmt.Errorf("%s: no sheet", path)
		}
		if rows, err = f.GetRows(sheets[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	} else {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if rows, err = parseCSV(path, data); err != nil {
			return nil, err
		}
	}
	return newSheet(path, rows, rep)
}

// parseCSV reads CSV text; the separator is the one the header line uses most.
func parseCSV(name string, data []byte) ([][]string, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	header, _, _ := bytes.Cut(data, []byte("\n"))
	sep := ','
	for _, c := range []rune{';', '\t'} {
		if bytes.Count(header, []byte(string(c))) > bytes.Count(header, []byte(string(sep))) {
			sep = c
		}
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma, r.FieldsPerRecord, r.LazyQuotes = sep, -1, true
	var rows [][]string
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("%s:%d:%d: %v", name, pe.Line, pe.Column, pe.Err)
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rows = append(rows, rec)
	}
}

func newSheet(path string, rows [][]string, rep *Report) (*sheet, error) {
	// Leading empty rows are skipped: the header is the first row with cells.
	for len(rows) > 0 && strings.TrimSpace(strings.Join(rows[0], "")) == "" {
		rows = rows[1:]
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: empty: a tag list starts with a header row", path)
	}
	s := &sheet{file: path, rows: rows, col: map[string]int{}, rep: rep}
	for i, h := range rows[0] {
		k := strings.ToLower(strings.Join(strings.Fields(h), "_"))
		if k == "" {
			continue
		}
		if _, dup := s.col[k]; dup {
			return nil, fmt.Errorf("%s:1:%d: column %q twice", path, i+1, h)
		}
		s.col[k] = i
	}
	return s, nil
}

// format says what kind of list a header row describes.
func (s *sheet) format() (string, error) {
	has := func(names ...string) bool {
		for _, n := range names {
			if _, ok := s.col[n]; !ok {
				return false
			}
		}
		return true
	}
	switch {
	case has("tag_name", "address", "data_type"):
		return "kepware", nil
	case has("group", "name", "address", "attribute", "type"):
		return "neuron", nil
	case has("name", "controller"):
		return "devices", nil
	case has("name", "address"):
		return "plain", nil
	}
	return "", fmt.Errorf("%s:1: a header this importer does not know: %s (a Kepware export has Tag Name, Address, Data Type; "+
		"a Neuron template group, name, address, attribute, type; tagpipe's tag list name, address, ...; a device list name, controller, ...)",
		s.file, strings.Join(s.rows[0], ", "))
}

// tagList is one tag list read into fields.
type tagList struct {
	file     string
	format   string
	fields   []field
	slave    int             // Neuron: the unit of the rows (-1: none)
	interval time.Duration   // Kepware: the scan rate of every tag, when they agree
	rates    map[int64][]int // Kepware: rows by scan rate
}

// TagLists reads tag lists (Kepware CSV exports, Neuron tag templates as CSV or xlsx,
// tagpipe's own CSV) into profiles and device lists into devices, and returns one
// [[inputs.modbus]] table holding them. A tag list becomes the profile opts.Profile (or is
// named after its file); wrong rows are reported by FILE:ROW:COLUMN and left out.
func TagLists(paths []string, opts TagListOptions) (*Result, error) {
	if len(paths) == 0 {
		return nil, errors.New("no tag list given")
	}
	rep := &Report{}
	sheets := make([]*sheet, 0, len(paths))
	for _, p := range paths {
		s, err := readSheet(p, rep)
		if err != nil {
			return nil, err
		}
		sheets = append(sheets, s)
	}
	return fromSheets(sheets, opts, rep)
}

// fromSheets turns read tag lists and device lists into the configuration.
func fromSheets(sheets []*sheet, opts TagListOptions, rep *Report) (*Result, error) {
	var paths []string
	var lists []*tagList
	var devSheets []*sheet
	for _, s := range sheets {
		paths = append(paths, s.file)
		kind, err := s.format()
		if err != nil {
			return nil, err
		}
		if kind == "devices" {
			devSheets = append(devSheets, s)
			continue
		}
		lists = append(lists, s.tagList(kind))
	}
	if len(lists) > 1 && opts.Profile != "" {
		return nil, fmt.Errorf("--profile names one profile: give one tag list, or let each be named after its file")
	}
	tbl := newModbusTable("")
	byName := map[string]*profile{}
	var first *tagList
	for _, l := range lists {
		name := opts.Profile
		if name == "" {
			name = strings.TrimSuffix(filepath.Base(l.file), filepath.Ext(l.file))
		}
		if len(l.fields) == 0 {
			rep.addf(l.file, 0, "", "", Bad, "no row could be imported: no profile %q", name)
			continue
		}
		p := &profile{name: tbl.uniqueProfileName(name), fields: l.fields, from: l.file}
		tbl.profiles = append(tbl.profiles, p)
		byName[p.name] = p
		if first == nil {
			first = l
		}
		if l.interval > 0 {
			tbl.plugin = append(tbl.plugin, kv{key: "interval", val: l.interval, comment: "the tags' scan rate"})
		}
		tbl.comments = append(tbl.comments, fmt.Sprintf("Profile %q from %s (%s).", p.name, l.file, l.format))
	}
	for _, s := range devSheets {
		tbl.comments = append(tbl.comments, "Devices from "+s.file+".")
		s.devices(tbl, byName)
	}
	res := &Result{Report: rep}
	if len(devSheets) == 0 && opts.Controller != "" && len(tbl.profiles) > 0 {
		p := tbl.profiles[0]
		slave := opts.SlaveID
		if slave < 0 {
			slave = max(first.slave, 1)
		}
		tbl.devices = append(tbl.devices, &device{name: p.name, controller: opts.Controller, slave: slave, profile: p,
			from: "--controller"})
	}
	var e emitter
	e.comment(0, "tagpipe configuration imported from tag lists: "+strings.Join(paths, ", ")+".")
	e.comment(0, "Written by `tagpipe import`; every field says where it came from (FILE:ROW).")
	if len(rep.Issues) > 0 {
		e.comment(0, "")
		e.comment(0, "Left out, or mapped approximately (also printed when importing):")
		for _, i := range rep.sorted() {
			e.comment(0, "  "+i.String())
		}
	}
	if len(tbl.profiles) == 0 {
		return nil, fmt.Errorf("no profile: %s", strings.TrimSpace(rep.String()))
	}
	if len(tbl.devices) == 0 {
		res.Partial = "no device: add [[inputs.modbus.device]] tables (a device list CSV, or --controller URL) before running it"
		e.blank()
		e.comment(0, strings.ToUpper(res.Partial[:1])+res.Partial[1:]+", e.g.:")
		e.comment(0, "  [[inputs.modbus.device]]\n    name = \"meter-1\"\n    controller = \"tcp://10.0.0.10:502\"\n    slave_id = 1\n    profile = \""+tbl.profiles[0].name+"\"")
	}
	e.blank()
	tbl.write(&e)
	res.Config = e.String()
	return res, nil
}

// tagList reads the rows of a tag list.
func (s *sheet) tagList(kind string) *tagList {
	l := &tagList{file: s.file, format: map[string]string{"kepware": "Kepware CSV export", "neuron": "Neuron tag template",
		"plain": "tagpipe tag list"}[kind], slave: -1, rates: map[int64][]int{}}
	known := map[string][]string{
		"kepware": {"tag_name", "address", "data_type", "description", "scaling", "raw_low", "raw_high", "scaled_low",
			"scaled_high", "scaled_data_type", "clamp_low", "clamp_high", "eng_units", "negate_value", "scan_rate"},
		"neuron": {"group", "name", "address", "attribute", "type", "description", "precision", "decimal"},
		"plain":  plainColumns,
	}[kind]
	var unused []string
	for i, h := range s.rows[0] {
		k := strings.ToLower(strings.Join(strings.Fields(h), "_"))
		if k != "" && !slices.Contains(known, k) {
			unused = append(unused, fmt.Sprintf("%s (column %d)", h, i+1))
		}
	}
	if len(unused) > 0 {
		why := "tagpipe has no such setting"
		if kind == "kepware" {
			why = "tagpipe only reads, with the data type given"
		}
		s.rep.addf(s.file, 1, "", "", Unmapped, "%s: %s", strings.Join(unused, ", "), why)
	}
	if kind == "kepware" {
		s.rep.addf(s.file, 1, "", "", Note, "Kepware sets the byte and word order per device (Data Encoding); the fields are ABCD "+
			"(big endian): set byte_order on the profile for a device whose words come low first")
	}
	names := map[string]int{}
	for r := 1; r < len(s.rows); r++ {
		if strings.TrimSpace(strings.Join(s.rows[r], "")) == "" {
			continue
		}
		var f field
		var ok bool
		switch kind {
		case "kepware":
			f, ok = s.kepwareRow(r, l)
		case "neuron":
			f, ok = s.neuronRow(r, l)
		default:
			f, ok = s.plainRow(r)
		}
		if !ok {
			continue
		}
		nameCol := map[string]string{"kepware": "tag_name"}[kind]
		if nameCol == "" {
			nameCol = "name"
		}
		key := f.Measurement + "\x00" + fmt.Sprint(f.Tags) + "\x00" + f.Name
		if prev, dup := names[key]; dup {
			s.bad(r, nameCol, Bad, "%q is also the name of row %d; the row is left out", f.Name, prev+1)
			continue
		}
		f.from, f.line = fmt.Sprintf("%s:%d", s.file, r+1), r+1
		l.fields = append(l.fields, f)
		if f.rate > 0 {
			l.rates[f.rate] = append(l.rates[f.rate], r)
		}
		if j := overlapping(l.fields, len(l.fields)-1); j >= 0 {
			l.fields = l.fields[:len(l.fields)-1]
			if f.rate > 0 {
				l.rates[f.rate] = l.rates[f.rate][:len(l.rates[f.rate])-1]
				if len(l.rates[f.rate]) == 0 {
					delete(l.rates, f.rate)
				}
			}
			s.bad(r, "address", Bad, "%s reads registers of %s (%s); the row is left out", describeField(&f.Field),
				describeField(&l.fields[j].Field), l.fields[j].from)
			continue
		}
		names[key] = r
	}
	if len(l.rates) == 1 {
		for ms := range l.rates {
			l.interval = time.Duration(ms) * time.Millisecond
		}
	} else if len(l.rates) > 1 {
		shortest := int64(math.MaxInt64)
		for ms := range l.rates {
			shortest = min(shortest, ms)
		}
		l.interval = time.Duration(shortest) * time.Millisecond
		s.rep.addf(s.file, 0, "", "scan_rate", Approximate, "the tags have %d scan rates: tagpipe polls a device's profile at one interval, the shortest (%d ms)",
			len(l.rates), shortest)
	}
	return l
}

// plainColumns are tagpipe's own tag list columns: the field keys, and a description.
var plainColumns = []string{"name", "register", "address", "data_type", "byte_order", "length", "decimals", "bit",
	"scale", "offset", "output", "measurement", "tags", "description"}

// plainRow reads a row of tagpipe's own tag list: the field keys as tagpipe's config has them.
func (s *sheet) plainRow(r int) (field, bool) {
	var f field
	f.Name = s.cell(r, "name")
	if f.Name == "" {
		s.bad(r, "name", Bad, "empty; the row is left out")
		return f, false
	}
	f.Register = strings.ToLower(s.cell(r, "register"))
	switch f.Register {
	case "", "holding":
		f.Register = ""
	case "coil", "discrete", "input":
	default:
		s.bad(r, "register", Bad, "%q: want coil, discrete, holding or input; the row is left out", f.Register)
		return f, false
	}
	ints := []struct {
		col      string
		dst      **int
		min, max int
		required bool
	}{{"address", &f.Address, 0, 65535, true}, {"bit", &f.Bit, 0, 15, false}}
	for _, c := range ints {
		v := s.cell(r, c.col)
		if v == "" {
			if c.required {
				s.bad(r, c.col, Bad, "empty; the row is left out")
				return f, false
			}
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < c.min || n > c.max {
			s.bad(r, c.col, Bad, "%q: want %d..%d; the row is left out", v, c.min, c.max)
			return f, false
		}
		*c.dst = &n
	}
	for _, c := range []struct {
		col string
		dst *int
		max int
	}{{"length", &f.Length, 125}, {"decimals", &f.Decimals, 18}} {
		if v := s.cell(r, c.col); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > c.max {
				s.bad(r, c.col, Bad, "%q: want 0..%d; the row is left out", v, c.max)
				return f, false
			}
			*c.dst = n
		}
	}
	f.DataType = strings.ToUpper(s.cell(r, "data_type"))
	f.ByteOrder = strings.ToUpper(s.cell(r, "byte_order"))
	f.Output = strings.ToLower(s.cell(r, "output"))
	f.Measurement = s.cell(r, "measurement")
	if v := s.cell(r, "scale"); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x == 0 || math.IsInf(x, 0) || math.IsNaN(x) {
			s.bad(r, "scale", Bad, "%q: want a number other than 0; the row is left out", v)
			return f, false
		}
		f.Scale = &x
	}
	if v := s.cell(r, "offset"); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			s.bad(r, "offset", Bad, "%q: want a number; the row is left out", v)
			return f, false
		}
		f.Offset = x
	}
	if v := s.cell(r, "tags"); v != "" {
		tags, err := parseTags(v)
		if err != nil {
			s.bad(r, "tags", Bad, "%v; the row is left out", err)
			return f, false
		}
		f.Tags = tags
	}
	f.comment = s.cell(r, "description")
	if err := checkField(&f.Field); err != nil {
		s.bad(r, err.col, Bad, "%v; the row is left out", err.err)
		return f, false
	}
	return f, true
}

// typedField gives a row's field the data type dt (tagpipe's), with what the address says: a
// coil or discrete input is a bit; a BIT of a register needs its bit, a STRING its length in
// bytes and byte order (H: the first character in the high byte, L: in the low byte; D and E,
// one character per register, are not read). shown is the type as the row writes it.
func (s *sheet) typedField(r int, f *field, register, dt, typeCol, shown string, bit, strBytes int, strOrder byte) bool {
	bits := register == "coil" || register == "discrete"
	switch {
	case bits && dt != "BIT":
		s.bad(r, typeCol, Bad, "%s: a coil or discrete input is a bit; the row is left out", shown)
		return false
	case bits:
	case dt == "BIT":
		if bit < 0 {
			s.bad(r, "address", Bad, "a bit of a register names the bit: %s.0 to .15; the row is left out", s.cell(r, "address"))
			return false
		}
		f.DataType, f.Bit = "BIT", &bit
	case dt == "STRING":
		switch {
		case strBytes < 0:
			s.bad(r, "address", Bad, "a string names its length in bytes and byte order: %s.20H; the row is left out", s.cell(r, "address"))
			return false
		case strOrder == 'D' || strOrder == 'E':
			s.bad(r, "address", Bad, "%c: one character per register; tagpipe reads two per register (H or L); the row is left out", strOrder)
			return false
		}
		f.DataType, f.Length = "STRING", (strBytes+1)/2
		if strOrder == 'L' {
			f.ByteOrder = "BA"
		}
	default:
		if bit >= 0 || strBytes >= 0 {
			s.bad(r, "address", Bad, "%s takes no bit or string suffix; the row is left out", shown)
			return false
		}
		f.DataType = dt
	}
	return true
}

// parseTags reads "key=value;key=value".
func parseTags(v string) (map[string]string, error) {
	tags := map[string]string{}
	for _, kv := range strings.Split(v, ";") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok || k == "" || val == "" {
			return nil, fmt.Errorf("%q: write tags as key=value;key=value", v)
		}
		tags[k] = val
	}
	return tags, nil
}

type cellError struct {
	col string
	err error
}

// checkField checks a field as the Modbus input's Init does, for the parts a tag list can get
// wrong, so that one bad row does not make the whole configuration fail --check.
func checkField(f *modbus.Field) *cellError {
	bits := f.Register == "coil" || f.Register == "discrete"
	dt := f.DataType
	if dt == "" && bits {
		dt = "BIT"
	}
	valid := map[string]bool{"BIT": true, "INT8L": true, "INT8H": true, "UINT8L": true, "UINT8H": true, "INT16": true,
		"UINT16": true, "INT32": true, "UINT32": true, "INT64": true, "UINT64": true, "FLOAT16": true, "FLOAT32": true,
		"FLOAT64": true, "FIXED": true, "UFIXED": true, "STRING": true}
	switch {
	case dt == "":
		return &cellError{"data_type", errors.New("empty: a register field needs a data type")}
	case !valid[dt]:
		return &cellError{"data_type", fmt.Errorf("%q is not a tagpipe data type", f.DataType)}
	case bits && dt != "BIT":
		return &cellError{"data_type", fmt.Errorf("%s: a coil or discrete input is BIT", dt)}
	case dt == "BIT" && !bits && f.Bit == nil:
		return &cellError{"bit", errors.New("a BIT of a register needs bit 0..15")}
	case dt != "BIT" && f.Bit != nil:
		return &cellError{"bit", errors.New("only a BIT has a bit")}
	case dt == "STRING" && f.Length < 1:
		return &cellError{"length", errors.New("a STRING needs its length in registers")}
	case dt != "STRING" && dt != "FIXED" && dt != "UFIXED" && f.Length != 0:
		return &cellError{"length", fmt.Errorf("%s takes no length", dt)}
	case (dt == "FIXED" || dt == "UFIXED") && f.Length != 0 && f.Length != 1 && f.Length != 2 && f.Length != 4:
		return &cellError{"length", fmt.Errorf("%s spans 1, 2 or 4 registers", dt)}
	case dt != "FIXED" && dt != "UFIXED" && f.Decimals != 0:
		return &cellError{"decimals", errors.New("only FIXED and UFIXED have decimals")}
	case *f.Address+registers(dt, f.Length) > 65536:
		return &cellError{"address", fmt.Errorf("%d: the field runs past 65535", *f.Address)}
	}
	switch f.ByteOrder {
	case "", "ABCD", "DCBA", "BADC", "CDAB", "BIG", "LITTLE":
		if dt == "STRING" && (f.ByteOrder == "DCBA" || f.ByteOrder == "CDAB" || f.ByteOrder == "LITTLE") {
			return &cellError{"byte_order", errors.New("a STRING is AB or BA")}
		}
	case "AB", "BA":
		if registers(dt, f.Length) > 1 && dt != "STRING" {
			return &cellError{"byte_order", fmt.Errorf("%s is for one-register types", f.ByteOrder)}
		}
	default:
		return &cellError{"byte_order", fmt.Errorf("%q: want ABCD, DCBA, BADC, CDAB, AB or BA", f.ByteOrder)}
	}
	switch f.Output {
	case "", "native", "float", "int", "uint":
	default:
		return &cellError{"output", fmt.Errorf("%q: want native, float, int or uint", f.Output)}
	}
	if dt == "STRING" && (f.Scale != nil || f.Offset != 0 || f.Output != "" && f.Output != "native") {
		return &cellError{"scale", errors.New("a STRING has no scale, offset or numeric output")}
	}
	return nil
}

// devices reads a device list into the table: name, controller, slave_id, profile, and tags
// (a tags column of key=value;key=value, and every other column a tag of its own).
func (s *sheet) devices(tbl *modbusTable, profiles map[string]*profile) {
	known := []string{"name", "controller", "slave_id", "profile", "tags", "transmission_mode"}
	var tagCols []string
	for i, h := range s.rows[0] {
		k := strings.ToLower(strings.Join(strings.Fields(h), "_"))
		if k != "" && !slices.Contains(known, k) {
			tagCols = append(tagCols, k)
			_ = i
		}
	}
	if len(tagCols) > 0 {
		s.rep.addf(s.file, 1, "", "", Note, "columns %s become tags of each device", strings.Join(tagCols, ", "))
	}
	for r := 1; r < len(s.rows); r++ {
		if strings.TrimSpace(strings.Join(s.rows[r], "")) == "" {
			continue
		}
		name := s.cell(r, "name")
		if name == "" {
			s.bad(r, "name", Bad, "empty; the device is left out")
			continue
		}
		if slices.ContainsFunc(tbl.devices, func(d *device) bool { return d.name == name }) {
			s.bad(r, "name", Bad, "%q is a device already; the row is left out", name)
			continue
		}
		ctrl := s.cell(r, "controller")
		if !strings.HasPrefix(ctrl, "tcp://") && !strings.HasPrefix(ctrl, "tls://") && !strings.HasPrefix(ctrl, "file:///") {
			s.bad(r, "controller", Bad, "%q: want tcp://HOST:PORT, tls://HOST:PORT or file:///dev/DEVICE; the device is left out", ctrl)
			continue
		}
		slave := 1
		if v := s.cell(r, "slave_id"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 247 {
				s.bad(r, "slave_id", Bad, "%q: want 0..247; the device is left out", v)
				continue
			}
			slave = n
		}
		pname := s.cell(r, "profile")
		p := profiles[pname]
		if pname == "" && len(tbl.profiles) == 1 {
			p = tbl.profiles[0]
		}
		if p == nil {
			s.bad(r, "profile", Bad, "%q: no such profile (have: %s); the device is left out", pname, strings.Join(sortedKeys(profiles), ", "))
			continue
		}
		d := &device{name: name, controller: ctrl, slave: slave, profile: p, from: fmt.Sprintf("%s:%d", s.file, r+1)}
		if v := s.cell(r, "transmission_mode"); v != "" {
			d.opts = append(d.opts, kv{key: "transmission_mode", val: strings.ToLower(v)})
		}
		tags := map[string]string{}
		if v := s.cell(r, "tags"); v != "" {
			t, err := parseTags(v)
			if err != nil {
				s.bad(r, "tags", Bad, "%v; the device is left out", err)
				continue
			}
			tags = t
		}
		for _, c := range tagCols {
			if v := s.cell(r, c); v != "" {
				tags[c] = v
			}
		}
		if len(tags) > 0 {
			d.tags = tags
		}
		tbl.devices = append(tbl.devices, d)
	}
}
