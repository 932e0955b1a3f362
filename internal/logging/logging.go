// Package logging sets up the agent's log/slog output and gives each plugin a logger that names
// it. Plugin loggers are made when the config is loaded, before [agent] says where logs go, so
// they send every record to whatever slog.Default is at the time of the call.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
)

// Options are the [agent] settings for logging.
type Options struct {
	Debug   bool
	Quiet   bool   // errors only
	Logfile string // "" or "stderr": standard error
	Format  string // "text" (default) or "json"
}

var (
	mu      sync.Mutex
	current io.Closer
)

// Setup makes slog.Default write as opts say. It closes the log file of an earlier Setup.
func Setup(opts Options) error {
	var w io.Writer = os.Stderr
	var closer io.Closer
	if opts.Logfile != "" && opts.Logfile != "stderr" {
		f, err := os.OpenFile(opts.Logfile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
		w, closer = f, f
	}
	level := slog.LevelInfo
	switch {
	case opts.Debug:
		level = slog.LevelDebug
	case opts.Quiet:
		level = slog.LevelError
	}
	ho := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch opts.Format {
	case "", "text":
		h = slog.NewTextHandler(w, ho)
	case "json":
		h = slog.NewJSONHandler(w, ho)
	default:
		if closer != nil {
			closer.Close()
		}
		return fmt.Errorf("log_format = %q: must be \"text\" or \"json\"", opts.Format)
	}
	slog.SetDefault(slog.New(h))
	mu.Lock()
	prev := current
	current = closer
	mu.Unlock()
	if prev != nil {
		prev.Close()
	}
	return nil
}

// Plugin returns the logger of a plugin: every line carries plugin="inputs.modbus" (and alias).
func Plugin(kind, name, alias string) *slog.Logger {
	attrs := []slog.Attr{slog.String("plugin", kind+"."+name)}
	if alias != "" {
		attrs = append(attrs, slog.String("alias", alias))
	}
	return slog.New(deferred{attrs: attrs})
}

// deferred hands each record to the handler of slog.Default at the time of the call.
type deferred struct {
	attrs []slog.Attr
	group string
}

func (d deferred) handler() slog.Handler {
	h := slog.Default().Handler().WithAttrs(d.attrs)
	if d.group != "" {
		h = h.WithGroup(d.group)
	}
	return h
}

func (d deferred) Enabled(ctx context.Context, l slog.Level) bool {
	return slog.Default().Handler().Enabled(ctx, l)
}

func (d deferred) Handle(ctx context.Context, r slog.Record) error {
	return d.handler().Handle(ctx, r)
}

func (d deferred) WithAttrs(attrs []slog.Attr) slog.Handler {
	if d.group != "" {
		return d.handler().WithAttrs(attrs)
	}
	return deferred{attrs: append(append([]slog.Attr{}, d.attrs...), attrs...)}
}

func (d deferred) WithGroup(name string) slog.Handler {
	if d.group != "" {
		return d.handler().WithGroup(name)
	}
	return deferred{attrs: d.attrs, group: name}
}
