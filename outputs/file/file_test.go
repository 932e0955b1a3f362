package file

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

func metrics(n int) []*models.Metric {
	out := make([]*models.Metric, n)
	for i := range out {
		out[i] = models.New("m", []models.Tag{{Key: "device", Value: "d1"}}, []models.Field{models.Int("i", int64(i))}, time.Unix(int64(1700000000+i), 0))
	}
	return out
}

func newFile(t *testing.T, f *File) *File {
	t.Helper()
	f.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := f.Init(); err != nil {
		t.Fatal(err)
	}
	if err := f.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestWritesLineProtocolAndJSON(t *testing.T) {
	dir := t.TempDir()
	lp, js := filepath.Join(dir, "a.lp"), filepath.Join(dir, "a.json")
	f := newFile(t, &File{Files: []string{lp}, DataFormat: "influx", Precision: config.Duration(time.Second)})
	if err := f.Write(context.Background(), metrics(2)); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(lp)
	if string(got) != "m,device=d1 i=0i 1700000000\nm,device=d1 i=1i 1700000001\n" {
		t.Fatalf("got %q", got)
	}
	j := newFile(t, &File{Files: []string{js}, DataFormat: "json"})
	j.Write(context.Background(), metrics(1))
	var v map[string]any
	data, _ := os.ReadFile(js)
	if err := json.Unmarshal(data, &v); err != nil || v["name"] != "m" || v["timestamp"] != float64(1700000000) {
		t.Fatalf("json %s: %v", data, err)
	}
}

func TestRotationBySize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.lp")
	f := newFile(t, &File{Files: []string{p}, RotationMaxSize: 100, RotationMaxArchives: 2})
	for i := range 6 { // each write is 2 lines of ~35 bytes: a new file every second write
		if err := f.Write(context.Background(), metrics(2)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for _, name := range []string{"out.lp", "out.lp.1", "out.lp.2"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Size() > 100 {
			t.Fatalf("%s is %d bytes, over the 100-byte limit", name, st.Size())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out.lp.3")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("more archives kept than rotation_max_archives")
	}
}

func TestUnwritableMetricIsRejectedOthersWritten(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.lp")
	f := newFile(t, &File{Files: []string{p}})
	batch := metrics(3)
	batch[1] = models.New("m", nil, []models.Field{models.Float("v", math.NaN())}, time.Unix(1, 0))
	err := f.Write(context.Background(), batch)
	pw, ok := models.AsPartialWrite(err)
	if !ok || len(pw.Rejected) != 1 || pw.Rejected[0] != 1 || len(pw.Accepted) != 2 {
		t.Fatalf("got %v", err)
	}
	data, _ := os.ReadFile(p)
	if strings.Count(string(data), "\n") != 2 {
		t.Fatalf("written %q", data)
	}
}

func TestConnectFailsOnUnwritablePath(t *testing.T) {
	f := &File{Files: []string{filepath.Join(t.TempDir(), "missing", "out.lp")}}
	if err := f.Init(); err != nil {
		t.Fatal(err)
	}
	if err := f.Connect(context.Background()); err == nil {
		t.Fatal("Connect must fail when the file cannot be opened")
	}
}

func TestInitErrors(t *testing.T) {
	for _, c := range []struct {
		f    File
		want string
	}{
		{File{}, "files:"},
		{File{Files: []string{"stdout"}, DataFormat: "xml"}, "data_format:"},
		{File{Files: []string{"stdout"}, RotationMaxArchives: -1}, "rotation_max_archives:"},
	} {
		if err := c.f.Init(); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %s", c.f, err, c.want)
		}
	}
}
