package importer

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/tagpipe/tagpipe/inputs/modbus"
)

// ExportCSV writes the profile of a configuration file as tagpipe's tag list (the columns
// plainColumns, one row per field), which `tagpipe import csv` reads back into the same profile.
func ExportCSV(configFile, profile string) (string, error) {
	text, err := os.ReadFile(configFile)
	if err != nil {
		return "", err
	}
	profiles, err := profilesOf(string(text))
	if err != nil {
		return "", tomlError(configFile, err)
	}
	var names []string
	for _, p := range profiles {
		if p.Name == profile {
			return profileCSV(p)
		}
		names = append(names, p.Name)
	}
	return "", fmt.Errorf("%s: no profile %q (have: %s)", configFile, profile, strings.Join(names, ", "))
}

// profilesOf returns the profiles of every [[inputs.modbus]] of a configuration's text.
func profilesOf(text string) ([]modbus.Profile, error) {
	var doc struct {
		Inputs struct {
			Modbus []struct {
				Profiles []modbus.Profile `toml:"profile"`
			} `toml:"modbus"`
		} `toml:"inputs"`
	}
	if _, err := toml.Decode(text, &doc); err != nil {
		return nil, err
	}
	var out []modbus.Profile
	for _, m := range doc.Inputs.Modbus {
		out = append(out, m.Profiles...)
	}
	return out, nil
}

func profileCSV(p modbus.Profile) (string, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write(plainColumns)
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	for _, f := range p.Fields {
		row := make([]string, len(plainColumns))
		set := func(col, v string) {
			for i, c := range plainColumns {
				if c == col {
					row[i] = v
				}
			}
		}
		set("name", f.Name)
		set("register", f.Register)
		if f.Address != nil {
			set("address", strconv.Itoa(*f.Address))
		}
		set("data_type", f.DataType)
		// The profile's byte order and measurement apply to its fields unless a field has its own.
		set("byte_order", orEmpty(f.ByteOrder, p.ByteOrder))
		if f.Length != 0 {
			set("length", strconv.Itoa(f.Length))
		}
		if f.Decimals != 0 {
			set("decimals", strconv.Itoa(f.Decimals))
		}
		if f.Bit != nil {
			set("bit", strconv.Itoa(*f.Bit))
		}
		if f.Scale != nil {
			set("scale", num(*f.Scale))
		}
		if f.Offset != 0 {
			set("offset", num(f.Offset))
		}
		set("output", f.Output)
		set("measurement", orEmpty(f.Measurement, p.Measurement))
		tags := map[string]string{}
		for k, v := range p.Tags {
			tags[k] = v
		}
		for k, v := range f.Tags {
			tags[k] = v
		}
		var parts []string
		for _, k := range sortedKeys(tags) {
			parts = append(parts, k+"="+tags[k])
		}
		set("tags", strings.Join(parts, ";"))
		w.Write(row)
	}
	w.Flush()
	return b.String(), w.Error()
}

func orEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
