package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/importer"
)

// importUsage is `tagpipe import --help`; the main --help repeats the flags (a test in
// packaging/ checks both against the flag sets).
const importUsage = `Usage:
  tagpipe import telegraf FILE|DIR... [--out FILE]
  tagpipe import csv FILE... [--profile NAME] [--controller URL] [--slave-id N] [--out FILE]
  tagpipe import xlsx FILE... [--profile NAME] [--controller URL] [--slave-id N] [--out FILE]
  tagpipe export csv --profile NAME --config FILE [--out FILE]

Flags:
`

// parseInterspersed parses flags that may stand before, between or after the arguments and
// returns the arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

type importFlags struct {
	fs         *flag.FlagSet
	out        *string
	profile    *string
	controller *string
	slaveID    *int
	config     *string
}

func newImportFlags(name string, stderr io.Writer) *importFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &importFlags{fs: fs}
	f.out = fs.String("out", "", "write the configuration (or CSV) to `FILE` instead of standard output")
	f.profile = fs.String("profile", "", "the profile `NAME` a tag list becomes (import) or to write (export)")
	f.controller = fs.String("controller", "", "with a tag list and no device list: one device on this controller `URL`")
	f.slaveID = fs.Int("slave-id", -1, "the unit id `N` of that device (default: the tag list's, else 1)")
	f.config = fs.String("config", "", "export: the configuration `FILE` that holds the profile")
	return f
}

// printImportUsage prints the import and export usage with every flag.
func printImportUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, importUsage)
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  %-24s %s\n", strings.TrimSpace("--"+f.Name+" "+arg), help)
	})
}

// parseCommand parses the flags and arguments of import or export; code >= 0 means return it
// (--help printed, or a bad flag).
func parseCommand(name string, args []string, stdout, stderr io.Writer) (f *importFlags, rest []string, code int) {
	f = newImportFlags("tagpipe "+name, stderr)
	f.fs.Usage = func() {}
	rest, err := parseInterspersed(f.fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printImportUsage(stdout, f.fs)
			return nil, nil, 0
		}
		fmt.Fprintf(stderr, "see tagpipe %s --help\n", name)
		return nil, nil, 2
	}
	return f, rest, -1
}

func runImport(args []string, stdout, stderr io.Writer) int {
	f, rest, code := parseCommand("import", args, stdout, stderr)
	if code >= 0 {
		return code
	}
	var err error
	if len(rest) < 2 {
		fmt.Fprintln(stderr, "tagpipe import: say what to import: telegraf FILE|DIR..., csv FILE... or xlsx FILE... (see tagpipe import --help)")
		return 2
	}
	var res *importer.Result
	switch rest[0] {
	case "telegraf":
		res, err = importer.Telegraf(rest[1:])
	case "csv", "xlsx":
		res, err = importer.TagLists(rest[1:], importer.TagListOptions{
			Profile: *f.profile, Controller: *f.controller, SlaveID: *f.slaveID,
		})
	default:
		fmt.Fprintf(stderr, "tagpipe import: %q: import telegraf, csv or xlsx\n", rest[0])
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprint(stderr, res.Report.String())
	if err := writeOut(*f.out, stdout, res.Config); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	name := *f.out
	if name == "" {
		name = "the configuration"
	}
	fmt.Fprintf(stderr, "%s: %d not mapped, %d approximate, %d left out as wrong, %d notes\n", name,
		res.Report.Count(importer.Unmapped), res.Report.Count(importer.Approximate), res.Report.Count(importer.Bad),
		res.Report.Count(importer.Note))
	if res.Partial != "" {
		fmt.Fprintf(stderr, "%s: %s\n", name, res.Partial)
		return 0
	}
	// The written configuration must load as tagpipe --check loads it.
	var unset []string
	lookup := func(k string) (string, bool) {
		v, ok := os.LookupEnv(k)
		if !ok {
			unset = append(unset, k)
		}
		return v, ok
	}
	if _, err := config.LoadText(name, res.Config, lookup); err != nil {
		fmt.Fprintf(stderr, "%s does not pass --check:\n%v\n", name, err)
		if len(unset) > 0 {
			fmt.Fprintf(stderr, "(it names environment variables that are not set here: %s)\n", strings.Join(unset, ", "))
		}
		return 1
	}
	return 0
}

func runExport(args []string, stdout, stderr io.Writer) int {
	f, rest, code := parseCommand("export", args, stdout, stderr)
	if code >= 0 {
		return code
	}
	if len(rest) != 1 || rest[0] != "csv" || *f.profile == "" || *f.config == "" {
		fmt.Fprintln(stderr, "tagpipe export: write tagpipe export csv --profile NAME --config FILE [--out FILE]")
		return 2
	}
	text, err := importer.ExportCSV(*f.config, *f.profile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := writeOut(*f.out, stdout, text); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func writeOut(path string, stdout io.Writer, text string) error {
	if path == "" {
		_, err := io.WriteString(stdout, text)
		return err
	}
	return os.WriteFile(path, []byte(text), 0o640)
}
