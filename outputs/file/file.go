// Package file is the file output: metrics to standard output or to files, with rotation by size.
package file

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/safefile"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

//go:embed sample.conf
var sampleConfig string

// File writes every batch to each of Files.
type File struct {
	Files               []string        `toml:"files"`
	DataFormat          string          `toml:"data_format"`
	Precision           config.Duration `toml:"precision"`
	RotationMaxSize     config.Size     `toml:"rotation_max_size"`
	RotationMaxArchives int             `toml:"rotation_max_archives"`
	Log                 *slog.Logger    `toml:"-"`

	ser     serializer.Serializer
	writers []*target
	buf     []byte
}

type target struct {
	path string // "" for stdout/stderr
	w    io.Writer
	f    *os.File
	size int64
}

func init() {
	outputs.Add("file", func() models.Output {
		return &File{Files: []string{"stdout"}, DataFormat: "influx", RotationMaxArchives: 5}
	})
}

// SampleConfig implements models.Output.
func (*File) SampleConfig() string { return sampleConfig }

// Init implements models.Initializer.
func (f *File) Init() error {
	if len(f.Files) == 0 {
		return config.KeyErrorf("files", "give at least one file (or \"stdout\")")
	}
	if f.RotationMaxSize < 0 {
		return config.KeyErrorf("rotation_max_size", "cannot be negative")
	}
	if f.RotationMaxArchives < 0 {
		return config.KeyErrorf("rotation_max_archives", "cannot be negative")
	}
	ser, err := serializer.New(f.DataFormat, f.Precision.D())
	if err != nil {
		return config.KeyErrorf("data_format", "%v", err)
	}
	f.ser = ser
	return nil
}

// Connect opens the files.
func (f *File) Connect(context.Context) error {
	f.writers = f.writers[:0]
	for _, p := range f.Files {
		switch p {
		case "stdout":
			f.writers = append(f.writers, &target{w: os.Stdout})
		case "stderr":
			f.writers = append(f.writers, &target{w: os.Stderr})
		default:
			t := &target{path: p}
			if err := t.open(); err != nil {
				f.Close()
				return err
			}
			f.writers = append(f.writers, t)
		}
	}
	return nil
}

func (t *target) open() error {
	fh, err := safefile.OpenFile(t.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return err
	}
	t.f, t.w, t.size = fh, fh, st.Size()
	return nil
}

// rotate renames path to path.1 (path.1 to path.2, ...), keeping at most archives old files.
func (t *target) rotate(archives int) error {
	if err := t.f.Close(); err != nil {
		return err
	}
	if archives == 0 {
		if err := os.Remove(t.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return t.open()
	}
	os.Remove(t.path + "." + strconv.Itoa(archives))
	for i := archives - 1; i >= 1; i-- {
		from := t.path + "." + strconv.Itoa(i)
		if err := os.Rename(from, t.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(t.path, t.path+".1"); err != nil {
		return err
	}
	return t.open()
}

// Write implements models.Output. A metric that cannot be serialized is rejected (logged once per
// batch); the rest are written.
func (f *File) Write(_ context.Context, batch []*models.Metric) error {
	f.buf = f.buf[:0]
	var rejected []int
	var firstErr error
	for i, m := range batch {
		var err error
		if f.buf, err = f.ser.Append(f.buf, m); err != nil {
			rejected = append(rejected, i)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	for _, t := range f.writers {
		if t.f != nil && f.RotationMaxSize > 0 && t.size > 0 && t.size+int64(len(f.buf)) > int64(f.RotationMaxSize) {
			if err := t.rotate(f.RotationMaxArchives); err != nil {
				return fmt.Errorf("rotate %s: %w", t.path, err)
			}
		}
		n, err := t.w.Write(f.buf)
		t.size += int64(n)
		if err != nil {
			return fmt.Errorf("write %s: %w", t.name(), err)
		}
	}
	if len(rejected) > 0 {
		f.Log.Warn("metrics that cannot be serialized were dropped", "count", len(rejected), "first", firstErr)
		accepted := make([]int, 0, len(batch)-len(rejected))
		r := 0
		for i := range batch {
			if r < len(rejected) && rejected[r] == i {
				r++
				continue
			}
			accepted = append(accepted, i)
		}
		return &models.PartialWriteError{Err: firstErr, Accepted: accepted, Rejected: rejected}
	}
	return nil
}

func (t *target) name() string {
	if t.path == "" {
		return "standard output"
	}
	return t.path
}

// Close closes the files.
func (f *File) Close() error {
	var errs []error
	for _, t := range f.writers {
		if t.f != nil {
			errs = append(errs, t.f.Close())
		}
	}
	f.writers = nil
	return errors.Join(errs...)
}
